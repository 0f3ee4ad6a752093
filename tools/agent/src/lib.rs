//! Library side of the `dm-switch` agent: the wire format, devices and
//! their tables (read and changed through the DM ioctls), mapping sources,
//! window planning, the netlink channel, the configuration and activation.
//! The binary (`main.rs`) wires them into the command line.

pub mod activate;
pub mod cli;
pub mod config;
pub mod device;
pub mod iostats;
pub mod lifecycle;
pub mod mapping;
pub mod netlink;
pub mod plan;
pub mod readback;
pub mod transfer;
pub mod wire;
