// SPDX-License-Identifier: GPL-2.0

//! dm-switch: a device-mapper target that sends each bio to one of several
//! paths according to a bit-packed page table with one entry per fixed-size
//! region, uploaded by an agent over generic netlink (`DM_SWITCH`) or set with
//! `dmsetup message ... set_region_mappings`.
//!
//! The crate has three layers; only the first may contain `unsafe` code:
//! - [`kapi`]: safe abstractions over kernel C APIs (DM targets, bios,
//!   generic netlink, RCU, per-CPU counters, module attributes);
//! - [`pure`]: the page table, the wire format and the message grammar, also
//!   compiled into the host tests;
//! - the switch itself: [`target`] (the DM target) and [`control`] (registry
//!   of live instances, the DM_SWITCH protocol, sysfs content).

mod kapi;

#[forbid(unsafe_code)]
mod control;
#[forbid(unsafe_code)]
mod pure;
#[forbid(unsafe_code)]
mod target;

use control::{protocol::Protocol, registry, sysfs};
use kapi::{dm, genl};
use kernel::prelude::*;

module! {
    type: SwitchModule,
    name: "dm_switch",
    author: "dm-switch-rs developers",
    description: "device-mapper switch target: region-mapped path selector",
    license: "GPL",
}

/// The loaded module: everything registered at init. Fields drop in
/// declaration order, the reverse of init: the sysfs files, the netlink
/// family and the target type go first, the registry they share last (which
/// then reports any DM table claim a target failed to release).
struct SwitchModule {
    _sysfs: sysfs::Files,
    _family: genl::Family<Protocol>,
    _target: dm::Registration<target::Switch>,
    _registry: registry::Owner,
}

impl kernel::Module for SwitchModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let registry = registry::Owner::new()?;
        let target = dm::Registration::new(module, registry.registry().clone())?;
        let family = genl::Family::register(module, Protocol::new(registry.registry().clone()))?;
        let sysfs = sysfs::Files::create(module, family.id(), target::VERSION)?;
        Ok(Self {
            _sysfs: sysfs,
            _family: family,
            _target: target,
            _registry: registry,
        })
    }
}
