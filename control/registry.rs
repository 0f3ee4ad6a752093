// SPDX-License-Identifier: GPL-2.0

//! The control state of switch targets: each target's [`Instance`] (its page
//! table and writer lock), and the [`Registry`] through which the DM_SWITCH
//! protocol finds the *live* instance of a device.
//!
//! A target's place in the registry is one value, its [`Membership`]: made
//! by the constructor, it claims the DM table for the target; resuming the
//! table makes the instance the device's live one, suspending it stops that,
//! and dropping the membership (with the target, or when the constructor
//! fails after claiming) releases both the claim and the device entry.
//!
//! A table loaded with `dmsetup reload` is never reachable until it is
//! resumed. When a new instance goes live on a device whose previous
//! instance had the same geometry (path count, region size, length), it
//! takes over that instance's page table; when only the length differs (the
//! device grew or shrank online), it starts from that table resized
//! ([`Membership::prepare`]).

use crate::kapi::{block::DevT, dm::TableId, iostat::IoStats, rcu::RcuBox};
use crate::pure::ptbl::{min_pte_bits, PageTable, UpdateError};
use kernel::alloc::AllocError;
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
};

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

/// Whether an instance is its device's live one (its table resumed).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Liveness {
    /// Loaded (or suspended): I/O does not reach it, uploads are refused.
    Inactive,
    /// The device's live table.
    Live,
}

/// Which instances an update may change.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Only the device's live instance (netlink uploads address a device).
    LiveOnly,
    /// Any instance (a DM message addresses a loaded table).
    Any,
}

/// What a table update can fail with, besides its own error `E`.
pub(crate) enum UpdateFail<E> {
    /// [`Scope::LiveOnly`] and the instance is not (or no longer) live.
    NotLive,
    /// The update itself failed; nothing changed.
    Update(E),
}

/// Control state of one switch target, shared by the target and the
/// DM_SWITCH protocol.
#[pin_data]
pub(crate) struct Instance {
    /// Fixed geometry.
    pub(crate) geometry: Geometry,
    /// The published page table; `map()` reads it under RCU.
    pub(crate) table: RcuBox<PageTable>,
    /// I/O routed to each path (row = path index), since this instance was
    /// made: a reloaded table starts from zero.
    pub(crate) path_io: IoStats,
    /// Serializes table writers; says whether the instance is live.
    #[pin]
    writer: Mutex<Liveness>,
}

impl Instance {
    /// A new, not yet live instance starting with `table`.
    pub(crate) fn new(geometry: Geometry, table: Option<KBox<PageTable>>) -> Result<Arc<Self>> {
        let path_io = IoStats::new(geometry.dev_count as usize)?;
        Arc::pin_init(
            pin_init!(Self {
                geometry,
                table: RcuBox::new(table),
                path_io,
                writer <- new_mutex!(Liveness::Inactive, "dm_switch::Instance::writer"),
            }),
            GFP_KERNEL,
        )
    }

    /// Replaces the table with what `build` makes of the current one, unless
    /// `build` fails or `scope` excludes this instance. The replaced table is
    /// freed after a grace period.
    pub(crate) fn update<E>(
        &self,
        scope: Scope,
        build: impl FnOnce(Option<&PageTable>) -> Result<KBox<PageTable>, E>,
    ) -> Result<(), UpdateFail<E>> {
        let liveness = self.writer.lock();
        if scope == Scope::LiveOnly && *liveness != Liveness::Live {
            return Err(UpdateFail::NotLive);
        }
        let new = build(self.table.writer_view()).map_err(UpdateFail::Update)?;
        let old = self.table.replace(Some(new));
        drop(liveness);
        old.free();
        Ok(())
    }

    /// An exact snapshot of the published table of a live instance, to keep
    /// while writers go on: a copy sharing its chunks (copy-on-write), taken
    /// under the writer lock. With no table published yet, the empty table of
    /// the geometry.
    pub(crate) fn snapshot(&self) -> Result<PageTable, UpdateFail<AllocError>> {
        let liveness = self.writer.lock();
        if *liveness != Liveness::Live {
            return Err(UpdateFail::NotLive);
        }
        let g = self.geometry;
        match self.table.writer_view() {
            Some(t) => PageTable::derive(Some(t), g.dev_count, t.page_total(), t.pte_bits()),
            None => PageTable::empty(g.dev_count, g.regions, min_pte_bits(g.dev_count)),
        }
        .map_err(UpdateFail::Update)
    }

    fn set_liveness(&self, liveness: Liveness) {
        *self.writer.lock() = liveness;
    }

    /// Moves `self`'s page table to `to` (a table being resumed in place of
    /// `self`, which is suspended and serves no I/O any more). The two writer
    /// locks are taken one after the other, never nested.
    fn hand_over(&self, to: &Instance) {
        let table = {
            let mut liveness = self.writer.lock();
            *liveness = Liveness::Inactive;
            self.table.take()
        };
        let replaced = {
            let _to = to.writer.lock();
            to.table.publish(table)
        };
        replaced.free();
    }
}

/// A device's live instance.
struct Entry {
    devt: DevT,
    instance: Arc<Instance>,
}

/// Slots of the registry. Freed slots are `None` and reused (6.12's `KVec`
/// cannot remove elements).
struct Slots {
    /// Every device whose switch table has been resumed.
    devices: KVec<Option<Entry>>,
    /// Every DM table that holds a switch target.
    tables: KVec<Option<TableId>>,
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

impl Slots {
    /// DM tables currently claimed by a switch target.
    fn claimed(&self) -> usize {
        self.tables.iter().flatten().count()
    }
}

/// Every switch target's claim on its DM table, and every device's live
/// instance. Owned by the module (shared with the target type and the
/// netlink family, which it outlives).
#[pin_data]
pub(crate) struct Registry {
    #[pin]
    slots: Mutex<Slots>,
}

impl Registry {
    /// An empty registry.
    fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                slots <- new_mutex!(
                    Slots {
                        devices: KVec::new(),
                        tables: KVec::new(),
                    },
                    "dm_switch::Registry::slots"
                ),
            }),
            GFP_KERNEL,
        )
    }

    /// Claims DM table `table` for a switch target with `instance`; `None`
    /// if the table already holds one (the netlink ABI addresses a device,
    /// not a target).
    ///
    /// Also reserves the device slot [`Membership::activate`] may need when
    /// the table is resumed, so that resuming (which cannot fail) never
    /// allocates: there are never more devices than claimed tables, and
    /// `devices` has room for one per claimed table.
    pub(crate) fn claim(
        self: &Arc<Self>,
        table: TableId,
        instance: Arc<Instance>,
    ) -> Result<Option<Membership>> {
        let mut slots = self.slots.lock();
        if slots.tables.contains(&Some(table)) {
            return Ok(None);
        }
        let claimed = slots.claimed() + 1;
        let more = claimed.saturating_sub(slots.devices.len());
        slots.devices.reserve(more, GFP_KERNEL)?;
        insert(&mut slots.tables, table)?;
        Ok(Some(Membership {
            registry: self.clone(),
            table,
            instance,
        }))
    }

    /// The live instance of device `devt`, if any.
    pub(crate) fn find_live(&self, devt: DevT) -> Option<Arc<Instance>> {
        self.slots
            .lock()
            .devices
            .iter()
            .flatten()
            .find(|e| e.devt == devt)
            .map(|e| e.instance.clone())
    }
}

/// The module's handle on the [`Registry`]. Dropped last, after the target
/// type is unregistered (so DM has destroyed every switch target), it
/// reports DM table claims that were never released: a target leaked by an
/// error path.
pub(crate) struct Owner {
    registry: Arc<Registry>,
}

impl Owner {
    /// A new, empty registry.
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            registry: Registry::new()?,
        })
    }

    /// The registry, to share with the target type and the netlink family.
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let leaked = self.registry.slots.lock().claimed();
        if leaked != 0 {
            pr_err!("{leaked} DM table claim(s) leaked\n");
        }
    }
}

/// A switch target's place in the [`Registry`]: its claim on its DM table
/// and, while the table is live, its device's entry. Dropping it releases
/// both.
pub(crate) struct Membership {
    registry: Arc<Registry>,
    table: TableId,
    instance: Arc<Instance>,
}

impl Membership {
    /// The target's control state.
    pub(crate) fn instance(&self) -> &Instance {
        &self.instance
    }

    /// Before the instance goes live on device `devt` (`preresume`, which
    /// may allocate and fail): if it replaces an instance with the same paths
    /// and region size but another length, whose table covers exactly that
    /// instance's regions, this instance starts from that table resized to
    /// its own regions ([`PageTable::resized`], with its own initial table as
    /// the base for the regions gained). The previous instance is suspended,
    /// so its table no longer changes.
    pub(crate) fn prepare(&self, devt: DevT) -> Result {
        let Some(prev) = self.registry.find_live(devt) else {
            return Ok(());
        };
        let (g, p) = (self.instance.geometry, prev.geometry);
        if Arc::ptr_eq(&prev, &self.instance)
            || g == p
            || g.dev_count != p.dev_count
            || g.region_sectors != p.region_sectors
        {
            return Ok(());
        }
        let old = {
            let _writer = prev.writer.lock();
            match prev.table.writer_view() {
                Some(t) if t.page_total() == p.regions => {
                    PageTable::derive(Some(t), p.dev_count, t.page_total(), t.pte_bits())?
                }
                _ => return Ok(()),
            }
        };
        self.instance
            .update(Scope::Any, |base| {
                KBox::new(PageTable::resized(&old, g.regions, base)?, GFP_KERNEL)
                    .map_err(UpdateError::from)
            })
            .map_err(|_| ENOMEM)
    }

    /// Makes the instance the live one of device `devt` (its table was
    /// resumed), inheriting the page table of the device's previous instance
    /// if the geometry is the same. Never allocates (see
    /// [`Registry::claim`]).
    pub(crate) fn activate(&self, devt: DevT) -> Result {
        let mut slots = self.registry.slots.lock();
        match slots.devices.iter_mut().flatten().find(|e| e.devt == devt) {
            Some(entry) => {
                if !Arc::ptr_eq(&entry.instance, &self.instance) {
                    if entry.instance.geometry == self.instance.geometry {
                        entry.instance.hand_over(&self.instance);
                    }
                    entry.instance = self.instance.clone();
                }
            }
            None => insert(
                &mut slots.devices,
                Entry {
                    devt,
                    instance: self.instance.clone(),
                },
            )?,
        }
        self.instance.set_liveness(Liveness::Live);
        Ok(())
    }

    /// The instance stops being live (its device is being suspended).
    pub(crate) fn deactivate(&self) {
        self.instance.set_liveness(Liveness::Inactive);
    }
}

impl Drop for Membership {
    /// The target is being destroyed (or its constructor failed after
    /// claiming): it is no device's live target any more, and a later table
    /// at the same address is not refused.
    fn drop(&mut self) {
        {
            let mut slots = self.registry.slots.lock();
            clear(&mut slots.devices, |e| {
                Arc::ptr_eq(&e.instance, &self.instance)
            });
            clear(&mut slots.tables, |&t| t == self.table);
        }
        self.deactivate();
    }
}
