// SPDX-License-Identifier: GPL-2.0

//! The `DM_SWITCH` generic-netlink family: agents upload page-table windows
//! (`struct IpcPgTable`) and get a `struct IpcResponse` back, as in the RFC,
//! read the live table back with a dump (`NETLINK_CMD_DUMP_PAGE_TBL`): the
//! windows that recreate a snapshot of it (`pure::dump`), and read the I/O
//! sent to each path (`DM_SWITCH_CMD_DUMP_PATH_STATS`): one
//! `struct dm_switch_path_stats` record per path.
//!
//! Every request that reaches the handler is answered with a response whose
//! `status` is 0 or a positive errno and whose `err_str` says what was wrong.
//! A request is checked completely before anything changes; the new table is
//! built beside the live one and published in one step, so a refused window
//! or an allocation failure leaves the live mapping exactly as it was.

use crate::control::registry::{Registry, Scope, UpdateFail};
use crate::kapi::{
    block::DevT,
    genl::{self, Capability, DumpOut, DumpRequest, Reply, Request},
    iostat::IoCounts,
};
use crate::pure::{
    abi::{
        path_stats, PathStats, ATTR_DEV_MAJOR, ATTR_DEV_MINOR, ATTR_MSG, ATTR_PATH_STATS,
        ATTR_RESPONSE, CMD_DUMP_PAGE_TBL, CMD_DUMP_PATH_STATS, CMD_GET_PAGE_TBL, FAMILY_NAME,
        FAMILY_VERSION, MAX_IPC_MSG_LEN,
    },
    dump::{Dump, Step},
    ptbl::{PageTable, UpdateError},
    wire::{self, Echo, Response, WireError, RESPONSE_LEN},
};
use core::fmt;
use kernel::{alloc::KVVec, c_str, prelude::*, sync::Arc};

/// Why an upload was refused.
enum Refusal {
    NoAttribute,
    NotPermitted,
    Wire(WireError),
    NoLiveTarget(u32, u32),
    DevCount(u16, u32),
    Update(UpdateError),
}

impl Refusal {
    fn errno(&self) -> u32 {
        let e = match self {
            Self::NotPermitted => EPERM,
            Self::NoLiveTarget(..) => ENODEV,
            Self::Update(UpdateError::NoMemory) => ENOMEM,
            _ => EINVAL,
        };
        e.to_errno().unsigned_abs()
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAttribute => write!(f, "missing NETLINK_ATTR_MSG attribute"),
            Self::NotPermitted => write!(f, "uploading a page table needs CAP_SYS_ADMIN"),
            Self::Wire(e) => write!(f, "{e}"),
            Self::NoLiveTarget(ma, mi) => write!(f, "no live switch target on device {ma}:{mi}"),
            Self::DevCount(got, want) => {
                write!(
                    f,
                    "dev_count {got} does not match the target's {want} devices"
                )
            }
            Self::Update(UpdateError::NoSuchPath(region, path)) => {
                write!(
                    f,
                    "entry for region {region} is device {path}, past dev_count"
                )
            }
            Self::Update(UpdateError::RegionOutOfRange(region)) => {
                write!(f, "region {region} is past page_total")
            }
            Self::Update(UpdateError::NoMemory) => write!(f, "out of memory for the page table"),
        }
    }
}

/// A dump in progress: of a table snapshot, or of per-path counters summed
/// when it started.
pub(crate) enum Reading {
    /// `NETLINK_CMD_DUMP_PAGE_TBL`.
    Table(Dump),
    /// `DM_SWITCH_CMD_DUMP_PATH_STATS`: the rows, and the next path to send.
    PathStats(KVVec<IoCounts>, usize),
}

/// Appends as many path records as fit, in messages of one
/// `DM_SWITCH_ATTR_PATH_STATS` attribute each; returns whether more remain.
fn fill_path_stats(rows: &[IoCounts], next: &mut usize, out: &mut DumpOut<'_>) -> bool {
    while let Some(left) = rows.get(*next..).filter(|l| !l.is_empty()) {
        let n = (out.room() / path_stats::LEN).min(left.len());
        let Some(buf) = (n > 0)
            .then(|| out.add(ATTR_PATH_STATS, n * path_stats::LEN))
            .flatten()
        else {
            return true;
        };
        for (record, (row, path)) in buf
            .chunks_exact_mut(path_stats::LEN)
            .zip(left.iter().zip(*next..))
        {
            // Row indices are path indices, below dev_count <= 65535.
            let path = u32::try_from(path).unwrap_or(u32::MAX);
            PathStats {
                path,
                ios: row.ios,
                sectors: row.sectors,
            }
            .write(record);
        }
        *next += n;
    }
    false
}

/// The DM_SWITCH family's handler: finds the live instance of the addressed
/// device in the registry and applies the window to its table.
pub(crate) struct Protocol {
    registry: Arc<Registry>,
}

impl Protocol {
    /// The handler for the devices of `registry`.
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }

    fn upload(&self, request: &Request<'_>) -> Result<(), Refusal> {
        let msg = request.payload().ok_or(Refusal::NoAttribute)?;
        if !request.sender_capable(Capability::SYS_ADMIN) {
            return Err(Refusal::NotPermitted);
        }
        let parsed = wire::Request::parse(msg).map_err(Refusal::Wire)?;
        let req = parsed.header;
        let no_target = Refusal::NoLiveTarget(req.dev_major, req.dev_minor);
        let instance = DevT::new(req.dev_major, req.dev_minor)
            .and_then(|devt| self.registry.find_live(devt))
            .ok_or(no_target)?;
        let dev_count = instance.geometry.dev_count;
        if u32::from(req.dev_count) != dev_count {
            return Err(Refusal::DevCount(req.dev_count, dev_count));
        }
        let result = instance.update(Scope::LiveOnly, |current| {
            Ok(KBox::new(
                PageTable::uploaded(current, dev_count, &parsed)?,
                GFP_KERNEL,
            )?)
        });
        match result {
            Ok(()) => Ok(()),
            Err(UpdateFail::NotLive) => Err(Refusal::NoLiveTarget(req.dev_major, req.dev_minor)),
            Err(UpdateFail::Update(e)) => Err(Refusal::Update(e)),
        }
    }
}

impl genl::Handler for Protocol {
    const NAME: &'static str = FAMILY_NAME;
    const VERSION: u32 = FAMILY_VERSION as u32;
    const CMD: u8 = CMD_GET_PAGE_TBL;
    const REQUEST_ATTR: u16 = ATTR_MSG;
    const REQUEST_MAX_LEN: u16 = {
        const { assert!(MAX_IPC_MSG_LEN <= u16::MAX as usize) };
        MAX_IPC_MSG_LEN as u16
    };
    const REPLY_LEN: usize = RESPONSE_LEN;
    const DUMP_CMDS: &'static [u8] = &[CMD_DUMP_PAGE_TBL, CMD_DUMP_PATH_STATS];
    const DUMP_ATTRS: &'static [u16] = &[ATTR_DEV_MAJOR, ATTR_DEV_MINOR];
    type Cursor = Reading;

    fn handle(&self, request: &Request<'_>, reply: Reply<'_>) -> Result {
        let mut response = Response::new(Echo::of(request.payload().unwrap_or(&[])));
        // The reply is the only report of a refusal: logging each one would
        // let any sender with CAP_NET_ADMIN flood the kernel log.
        if let Err(refusal) = self.upload(request) {
            response.fail(refusal.errno(), format_args!("{refusal}"));
        }
        reply.send(ATTR_RESPONSE, response.as_bytes())
    }

    fn start(&self, request: &DumpRequest<'_>) -> Result<Reading, genl::Refusal> {
        let refuse = |err, msg| genl::Refusal { err, msg };
        if !request.sender_capable(Capability::SYS_ADMIN) {
            return Err(refuse(
                EPERM,
                c_str!("reading a page table or path statistics needs CAP_SYS_ADMIN"),
            ));
        }
        let (Some(major), Some(minor)) = (
            request.u32_attr(ATTR_DEV_MAJOR),
            request.u32_attr(ATTR_DEV_MINOR),
        ) else {
            return Err(refuse(
                EINVAL,
                c_str!("missing DM_SWITCH_ATTR_DEV_MAJOR or DM_SWITCH_ATTR_DEV_MINOR"),
            ));
        };
        let no_target = || refuse(ENODEV, c_str!("no live switch target on that device"));
        let instance = DevT::new(major, minor)
            .and_then(|devt| self.registry.find_live(devt))
            .ok_or_else(no_target)?;
        // Path statistics are summed now (a snapshot, as the table is). A
        // suspended device's can be read: they do not change while it is.
        if request.cmd() == CMD_DUMP_PATH_STATS {
            return instance
                .path_io
                .sum()
                .map(|rows| Reading::PathStats(rows, 0))
                .map_err(|_| refuse(ENOMEM, c_str!("out of memory for the path statistics")));
        }
        // A suspended device keeps its registry entry: only a live one is read.
        let table = instance.snapshot().map_err(|e| match e {
            UpdateFail::NotLive => no_target(),
            UpdateFail::Update(_) => refuse(ENOMEM, c_str!("out of memory for the snapshot")),
        })?;
        // dev_count <= 65535 (the constructor's limit).
        let dev_count = instance.geometry.dev_count as u16;
        Ok(Reading::Table(Dump::new(table, major, minor, dev_count)))
    }

    fn fill(&self, reading: &mut Reading, out: &mut DumpOut<'_>) -> Result<bool> {
        let dump = match reading {
            Reading::Table(dump) => dump,
            Reading::PathStats(rows, next) => return Ok(fill_path_stats(rows, next, out)),
        };
        loop {
            let len = match dump.next_len(out.room()) {
                Step::Window(len) => len,
                Step::NoRoom => return Ok(true),
                Step::Done => return Ok(false),
            };
            match out.add(ATTR_MSG, len) {
                Some(buf) => {
                    dump.next_window(buf);
                }
                None => return Ok(true),
            }
        }
    }
}
