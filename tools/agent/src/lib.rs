//! Library side of the `dm-switch` agent: the wire format, device and
//! `dmsetup` parsing, mapping sources, window planning and the netlink
//! channel. The binary (`main.rs`) wires them into the command line.

pub mod activate;
pub mod cli;
pub mod config;
pub mod device;
pub mod lifecycle;
pub mod mapping;
pub mod netlink;
pub mod plan;
pub mod readback;
pub mod transfer;
pub mod wire;
