// SPDX-License-Identifier: GPL-2.0

//! The switch's control side: what lives beside the targets rather than in
//! them.
//!
//! - [`registry`]: each target's control state ([`registry::Instance`]: page
//!   table, writer lock, live flag) and the registry of live instances by
//!   device, with reload inheritance;
//! - [`protocol`]: the DM_SWITCH generic-netlink protocol (validate, route to
//!   the live instance, reply);
//! - [`sysfs`]: the content of `/sys/module/dm_switch/{familyid,version}`.

pub(crate) mod protocol;
pub(crate) mod registry;
pub(crate) mod sysfs;
