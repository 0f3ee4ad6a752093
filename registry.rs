// SPDX-License-Identifier: GPL-2.0

//! The control side of switch targets: each target's [`Instance`] (its page
//! table and writer lock), and the registry through which the netlink path
//! finds the *live* instance of a device.
//!
//! An instance is registered (made live) when its table is resumed and stops
//! being live when it is suspended; a table loaded with `dmsetup reload` is
//! never reachable until it is resumed. When a new instance goes live on a
//! device whose previous instance had the same geometry (path count, region
//! size, length), it takes over that instance's page table.

use crate::{ptbl::PageTable, rcu::RcuBox};
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
};

/// What a table update can fail with, besides its own error `E`.
pub(crate) enum UpdateFail<E> {
    /// The instance is not (or no longer) the live one of its device.
    NotLive,
    /// The update itself failed; nothing changed.
    Update(E),
}

/// Geometry fixed when the target is constructed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Number of paths.
    pub(crate) dev_count: u32,
    /// Region size in sectors.
    pub(crate) region_sectors: u64,
    /// Target length in sectors.
    pub(crate) len: u64,
    /// Regions covering the target (`ceil(len / region_sectors)`).
    pub(crate) regions: u32,
}

/// Control state of one switch target, shared by the target and the netlink
/// path.
#[pin_data]
pub(crate) struct Instance {
    /// Fixed geometry.
    pub(crate) geometry: Geometry,
    /// The published page table; `map()` reads it under RCU.
    pub(crate) table: RcuBox<PageTable>,
    /// Serializes table writers; holds whether the instance is live.
    #[pin]
    writer: Mutex<bool>,
}

impl Instance {
    /// A new, not yet live instance starting with `table`.
    pub(crate) fn new(geometry: Geometry, table: Option<KBox<PageTable>>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                geometry,
                table: RcuBox::new(table),
                writer <- new_mutex!(false, "dm_switch::Instance::writer"),
            }),
            GFP_KERNEL,
        )
    }

    /// Replaces the table with what `build` makes of the current one, unless
    /// `build` fails or `live_only` is set and the instance is not live.
    /// The replaced table is freed after a grace period.
    pub(crate) fn update<E>(
        &self,
        live_only: bool,
        build: impl FnOnce(Option<&PageTable>) -> Result<KBox<PageTable>, E>,
    ) -> Result<(), UpdateFail<E>> {
        let live = self.writer.lock();
        if live_only && !*live {
            return Err(UpdateFail::NotLive);
        }
        let new = build(self.table.writer_view()).map_err(UpdateFail::Update)?;
        let old = self.table.replace(Some(new));
        drop(live);
        old.free();
        Ok(())
    }
}

/// A device's registered instance.
struct Entry {
    devt: u32,
    instance: Arc<Instance>,
}

/// Every device whose switch table has been resumed, and every DM table
/// that holds a switch target. Freed slots are `None` and reused (6.12's
/// `KVec` cannot remove elements).
pub(crate) struct Registry {
    devices: KVec<Option<Entry>>,
    tables: KVec<Option<usize>>,
}

/// Stores `v` in the first free slot of `slots`.
fn insert<T>(slots: &mut KVec<Option<T>>, v: T) -> Result {
    match slots.iter_mut().find(|s| s.is_none()) {
        Some(slot) => *slot = Some(v),
        None => slots.push(Some(v), GFP_KERNEL)?,
    }
    Ok(())
}

/// Frees every slot of `slots` whose value `matches`.
fn clear<T>(slots: &mut KVec<Option<T>>, matches: impl Fn(&T) -> bool) {
    for slot in slots.iter_mut() {
        if slot.as_ref().is_some_and(&matches) {
            *slot = None;
        }
    }
}

impl Registry {
    /// DM tables currently claimed by a switch target.
    fn claimed(&self) -> usize {
        self.tables.iter().flatten().count()
    }
}

static REGISTRY: AtomicPtr<Mutex<Registry>> = AtomicPtr::new(core::ptr::null_mut());

/// Owner of the global registry: created at module init, before the target
/// and the netlink family are registered; dropped after they are gone.
pub(crate) struct RegistryOwner {
    registry: Pin<KBox<Mutex<Registry>>>,
}

impl RegistryOwner {
    /// Creates the registry and makes it reachable through [`with_registry`].
    pub(crate) fn new() -> Result<Self> {
        let reg = KBox::pin_init(
            new_mutex!(
                Registry {
                    devices: KVec::new(),
                    tables: KVec::new(),
                },
                "dm_switch::REGISTRY"
            ),
            GFP_KERNEL,
        )?;
        REGISTRY.store(
            (&*reg as *const Mutex<Registry>).cast_mut(),
            Ordering::Release,
        );
        Ok(Self { registry: reg })
    }
}

impl Drop for RegistryOwner {
    fn drop(&mut self) {
        REGISTRY.store(core::ptr::null_mut(), Ordering::Release);
        // The module goes only after DM destroyed every table holding the
        // target, so a claim still here was leaked by an error path.
        let leaked = self.registry.lock().claimed();
        if leaked != 0 {
            pr_err!("{leaked} DM table claim(s) leaked\n");
        }
    }
}

/// Runs `f` on the locked global registry; `ENODEV` outside the module's life.
fn with_registry<R>(f: impl FnOnce(&mut Registry) -> Result<R>) -> Result<R> {
    let p = REGISTRY.load(Ordering::Acquire);
    // SAFETY: set by `RegistryOwner::new` before any callback can run, cleared
    // by its drop only after the target type and the family are unregistered;
    // the pointee is pinned and lives until then.
    let reg = unsafe { p.as_ref() }.ok_or(ENODEV)?;
    f(&mut reg.lock())
}

/// A DM table's claim to hold the switch target of its device; dropping it
/// (with the target, or when the constructor fails after claiming) releases
/// the claim, so a later table at the same address is not refused.
pub(crate) struct TableClaim {
    table: usize,
}

impl Drop for TableClaim {
    fn drop(&mut self) {
        // Only fails outside the module's lifetime, when there is nothing to release.
        let _ = with_registry(|reg| {
            clear(&mut reg.tables, |&t| t == self.table);
            Ok(())
        });
    }
}

/// Claims DM table `table` for a switch target; `None` if it already holds
/// one (the netlink ABI addresses a device, not a target).
///
/// Also reserves the device slot [`activate`] may need when the table is
/// resumed, so that resuming (which cannot fail) never allocates: there are
/// never more devices than claimed tables, and `devices` has room for one
/// per claimed table.
pub(crate) fn claim_table(table: usize) -> Result<Option<TableClaim>> {
    with_registry(|reg| {
        if reg.tables.contains(&Some(table)) {
            return Ok(None);
        }
        let claimed = reg.claimed() + 1;
        let more = claimed.saturating_sub(reg.devices.len());
        reg.devices.reserve(more, GFP_KERNEL)?;
        insert(&mut reg.tables, table)?;
        Ok(Some(TableClaim { table }))
    })
}

/// Makes `instance` the live one of device `devt`, inheriting the page table
/// of the device's previous instance if the geometry is the same.
pub(crate) fn activate(devt: u32, instance: &Arc<Instance>) -> Result {
    with_registry(|reg| {
        match reg.devices.iter_mut().flatten().find(|e| e.devt == devt) {
            Some(entry) => {
                if !Arc::ptr_eq(&entry.instance, instance) {
                    if entry.instance.geometry == instance.geometry {
                        inherit(&entry.instance, instance);
                    }
                    entry.instance = instance.clone();
                }
            }
            // Never allocates: `claim_table` reserved the slot.
            None => insert(
                &mut reg.devices,
                Entry {
                    devt,
                    instance: instance.clone(),
                },
            )?,
        }
        *instance.writer.lock() = true;
        Ok(())
    })
}

/// Moves `from`'s page table to `to` (a table being resumed in place of
/// `from`, which is suspended and serves no I/O any more). The two writer
/// locks are taken one after the other, never nested.
fn inherit(from: &Instance, to: &Instance) {
    let table = {
        let mut from_live = from.writer.lock();
        *from_live = false;
        from.table.take()
    };
    let replaced = {
        let _to = to.writer.lock();
        to.table.publish(table)
    };
    replaced.free();
}

/// `instance` stops being live (its device is being suspended).
pub(crate) fn deactivate(instance: &Instance) {
    *instance.writer.lock() = false;
}

/// Forgets `instance` (its target is being destroyed).
pub(crate) fn remove(instance: &Arc<Instance>) {
    // Only fails outside the module's lifetime, when there is nothing to forget.
    let _ = with_registry(|reg| {
        clear(&mut reg.devices, |e| Arc::ptr_eq(&e.instance, instance));
        Ok(())
    });
    deactivate(instance);
}

/// The live instance of device `devt`, if any.
pub(crate) fn find_live(devt: u32) -> Option<Arc<Instance>> {
    with_registry(|reg| {
        Ok(reg
            .devices
            .iter()
            .flatten()
            .find(|e| e.devt == devt)
            .map(|e| e.instance.clone()))
    })
    .ok()
    .flatten()
}
