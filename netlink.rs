// SPDX-License-Identifier: GPL-2.0

//! The `DM_SWITCH` generic-netlink family: agents upload page-table windows
//! (`struct IpcPgTable`) and get a `struct IpcResponse` back, as in the RFC.
//!
//! Every request that reaches the handler is answered with a response whose
//! `status` is 0 or a positive errno and whose `err_str` says what was wrong.
//! A request is checked completely before anything changes; the new table is
//! built beside the live one and published in one step, so a refused window
//! or an allocation failure leaves the live mapping exactly as it was.

use crate::{
    genl::{self, Reply},
    ptbl::{PageTable, UpdateError},
    registry::{self, UpdateFail},
    wire::{Echo, Request, Response, WireError, RESPONSE_LEN},
};
use core::fmt;
use kernel::c_str;
use kernel::{bindings as kb, prelude::*, str::CStr};

/// `NETLINK_CMD_GET_PAGE_TBL`.
const CMD_GET_PAGE_TBL: u8 = 1;
/// `NETLINK_ATTR_MSG`.
const ATTR_MSG: u32 = 1;
/// Attribute type of the reply: the RFC used the policy constant `NLA_BINARY`.
const ATTR_RESPONSE: i32 = 11;

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

/// The handler of the family's one command.
pub(crate) struct PageTableUpload;

impl genl::Handler for PageTableUpload {
    const NAME: &'static CStr = c_str!("DM_SWITCH");
    const VERSION: u32 = 1;
    const CMD: u8 = CMD_GET_PAGE_TBL;
    const REQUEST_ATTR: u32 = ATTR_MSG;
    const REPLY_LEN: usize = RESPONSE_LEN;

    fn handle(request: Option<&[u8]>, reply: Reply<'_>) -> Result {
        let msg = request.unwrap_or(&[]);
        let mut response = Response::new(Echo::of(msg));
        // The reply is the only report of a refusal: logging each one would
        // let any sender with CAP_NET_ADMIN flood the kernel log.
        if let Err(refusal) = upload(request) {
            response.fail(refusal.errno(), format_args!("{refusal}"));
        }
        reply.send(ATTR_RESPONSE, response.as_bytes())
    }
}

/// The family id for sysfs.
pub(crate) fn family_id() -> i32 {
    genl::family_id()
}

fn capable_sys_admin() -> bool {
    // SAFETY: capable() checks the current task's credentials; no preconditions.
    unsafe { kb::capable(kb::CAP_SYS_ADMIN as i32) }
}

/// `dev_t` of `major:minor`, or `None` if it cannot be one.
fn devt(major: u32, minor: u32) -> Option<u32> {
    (major < (1 << 12) && minor < (1 << 20)).then_some((major << 20) | minor)
}

fn upload(request: Option<&[u8]>) -> Result<(), Refusal> {
    let msg = request.ok_or(Refusal::NoAttribute)?;
    if !capable_sys_admin() {
        return Err(Refusal::NotPermitted);
    }
    let req = Request::parse(msg).map_err(Refusal::Wire)?;
    let no_target = Refusal::NoLiveTarget(req.dev_major, req.dev_minor);
    let instance = devt(req.dev_major, req.dev_minor)
        .and_then(registry::find_live)
        .ok_or(no_target)?;
    let dev_count = instance.geometry.dev_count;
    if u32::from(req.dev_count) != dev_count {
        return Err(Refusal::DevCount(req.dev_count, dev_count));
    }
    let result = instance.update(true, |current| {
        let mut table = PageTable::derive(current, dev_count, req.page_total, req.pte_bits)?;
        if req.page_count == 0 {
            table.free_chunk(req.page_offset >> crate::ptbl::CHUNK_SHIFT);
        } else {
            table.set_entries(req.entries())?;
        }
        table.set_userland(req.userland);
        Ok(KBox::new(table, GFP_KERNEL)?)
    });
    match result {
        Ok(()) => Ok(()),
        Err(UpdateFail::NotLive) => Err(Refusal::NoLiveTarget(req.dev_major, req.dev_minor)),
        Err(UpdateFail::Update(e)) => Err(Refusal::Update(e)),
    }
}
