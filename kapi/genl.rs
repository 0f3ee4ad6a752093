// SPDX-License-Identifier: GPL-2.0

//! A generic-netlink family with one `doit` command and dump commands
//! (`net/genetlink.h`).
//!
//! [`Family`] registers the family and unregisters it when dropped; it owns
//! its [`Handler`]. The family runs with `parallel_ops` (no global genl
//! mutex), in the initial network namespace, and all its commands are for
//! senders with CAP_NET_ADMIN only (`GENL_ADMIN_PERM`).
//!
//! - The `doit` command ([`Handler::CMD`]) keeps the legacy, lenient
//!   attribute validation (it is below `resv_start_op`) and one binary
//!   request attribute; the handler gets a [`Request`] and answers through a
//!   [`Reply`] allocated before it is called.
//! - The dump commands ([`Handler::DUMP_CMDS`], above `resv_start_op`) get
//!   strict validation with one policy of `u32` attributes. For each dump,
//!   [`Handler::start`] makes a cursor, [`Handler::fill`] writes messages
//!   from it into each dump buffer ([`DumpOut`]), and the cursor is dropped
//!   when the dump ends, however it ends.

use crate::kapi::bindings as b;
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{bindings as kb, error::to_result, ffi, prelude::*, str::CStr, ThisModule};

/// A family's commands.
pub(crate) trait Handler: Send + Sync + Sized {
    /// Family name (at most 15 bytes, no NUL).
    const NAME: &'static str;
    /// Family version.
    const VERSION: u32;
    /// The `doit` command's number.
    const CMD: u8;
    /// Attribute holding the `doit` request (`NLA_BINARY`); also the
    /// family's `maxattr`.
    const REQUEST_ATTR: u16;
    /// Largest request attribute payload in bytes; longer ones are refused
    /// by the genl core's policy check.
    const REQUEST_MAX_LEN: u16;
    /// Bytes of the reply's one attribute.
    const REPLY_LEN: usize;
    /// The dump commands' numbers (each above [`Handler::CMD`]).
    const DUMP_CMDS: &'static [u8];
    /// The dump requests' attributes, each an `NLA_U32`.
    const DUMP_ATTRS: &'static [u16];
    /// State of one dump, from `start` to its end.
    type Cursor: Send;

    /// Handles a `doit` request. `reply` is allocated before the call: a
    /// handler that acts on the request can always report that it did.
    fn handle(&self, request: &Request<'_>, reply: Reply<'_>) -> Result;

    /// Starts a dump of command `request.cmd()`, or refuses it (the errno
    /// and a static text go back in the `NLMSG_ERROR`'s extended ack).
    fn start(&self, request: &DumpRequest<'_>) -> Result<Self::Cursor, Refusal>;

    /// Appends the next messages of the dump to `out`; returns whether more
    /// remain.
    fn fill(&self, cursor: &mut Self::Cursor, out: &mut DumpOut<'_>) -> Result<bool>;
}

/// A refused dump: errno and the text for the extended ack.
pub(crate) struct Refusal {
    /// Returned to the sender.
    pub(crate) err: Error,
    /// Shown to the sender (`NLMSGERR_ATTR_MSG`).
    pub(crate) msg: &'static CStr,
}

/// A Linux capability a request's sender may hold.
#[derive(Clone, Copy)]
pub(crate) struct Capability(u32);

impl Capability {
    /// `CAP_SYS_ADMIN`.
    pub(crate) const SYS_ADMIN: Self = Self(kb::CAP_SYS_ADMIN);
}

/// Whether the sender of `skb` holds `cap` (`netlink_capable()`: checked
/// against the credentials the socket was opened with as well as the sending
/// task's, as netlink requires; plain `capable()` would check only the task).
///
/// # Safety
/// `skb` must be a live request skb.
unsafe fn capable(skb: *mut kb::sk_buff, cap: Capability) -> bool {
    // SAFETY: per the contract.
    unsafe { b::netlink_capable(skb.cast(), cap.0 as i32) }
}

/// The `doit` request being handled.
///
/// # Invariants
/// `skb` and `info` are the live request of a `doit` call for `'a`.
pub(crate) struct Request<'a> {
    skb: *mut kb::sk_buff,
    info: *mut b::genl_info,
    attr: u16,
    _p: PhantomData<&'a b::genl_info>,
}

impl Request<'_> {
    /// The payload of the request attribute, `None` if it is missing.
    pub(crate) fn payload(&self) -> Option<&[u8]> {
        let mut len: u32 = 0;
        // SAFETY: by the type invariant `info` is live; its attrs were parsed
        // against our policy and the payload lives through the request.
        unsafe {
            let p = b::kapi_genl_attr(self.info, i32::from(self.attr), &mut len);
            (!p.is_null()).then(|| core::slice::from_raw_parts(p.cast::<u8>(), len as usize))
        }
    }

    /// Whether the sender holds `cap` (see [`capable`]).
    pub(crate) fn sender_capable(&self, cap: Capability) -> bool {
        // SAFETY: by the type invariant `skb` is the live request skb.
        unsafe { capable(self.skb, cap) }
    }
}

/// A reply to the `doit` request being handled, allocated with room for one
/// attribute of [`Handler::REPLY_LEN`] bytes; freed if dropped unsent.
///
/// # Invariants
/// `skb` is an unsent reply to the live request `info`, with room for an
/// attribute of `room` bytes.
pub(crate) struct Reply<'a> {
    info: *mut b::genl_info,
    skb: NonNull<kb::sk_buff>,
    room: usize,
    _p: PhantomData<&'a b::genl_info>,
}

impl Reply<'_> {
    /// Sends the reply with one attribute `attr` holding `data` (at most the
    /// `REPLY_LEN` bytes it was allocated for: `EINVAL` otherwise).
    pub(crate) fn send(self, attr: u16, data: &[u8]) -> Result {
        if data.len() > self.room {
            return Err(EINVAL);
        }
        // At most `room`, which fits in i32 (checked where the reply is made).
        let len = data.len() as i32;
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: by the type invariant `skb` is an unsent reply to `info`
        // with room for `room >= len` bytes; `data` is valid for `len` bytes;
        // the call consumes the skb, so it is not freed again (ManuallyDrop).
        to_result(unsafe {
            b::kapi_genl_reply_send(
                this.skb.as_ptr().cast(),
                this.info,
                i32::from(attr),
                data.as_ptr().cast(),
                len,
            )
        })
    }
}

impl Drop for Reply<'_> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant an unsent reply owns its skb.
        unsafe { b::kapi_genl_reply_free(self.skb.as_ptr().cast()) };
    }
}

/// A dump request being started.
///
/// # Invariants
/// `cb` is the live callback of a dump being started, for `'a`.
pub(crate) struct DumpRequest<'a> {
    cb: *mut kb::netlink_callback,
    _p: PhantomData<&'a kb::netlink_callback>,
}

impl DumpRequest<'_> {
    /// The dump command (one of [`Handler::DUMP_CMDS`]).
    pub(crate) fn cmd(&self) -> u8 {
        // SAFETY: by the type invariant `cb` is the live callback of a dump.
        unsafe { b::kapi_genl_dump_cmd(self.cb.cast()) }
    }

    /// The `u32` request attribute `attr` (one of [`Handler::DUMP_ATTRS`]).
    pub(crate) fn u32_attr(&self, attr: u16) -> Option<u32> {
        let mut v = 0;
        // SAFETY: by the type invariant `cb` is live, its attrs parsed
        // against the dump's policy (so a present attribute is a u32).
        unsafe { b::kapi_genl_dump_u32(self.cb.cast(), i32::from(attr), &mut v) }.then_some(v)
    }

    /// Whether the sender holds `cap` (see [`capable`]).
    pub(crate) fn sender_capable(&self, cap: Capability) -> bool {
        // SAFETY: by the type invariant `cb` is live; its skb is the request.
        unsafe { capable(b::kapi_genl_dump_request_skb(self.cb.cast()).cast(), cap) }
    }
}

/// The buffer of one dump call.
///
/// # Invariants
/// `skb` and `cb` are the buffer and callback of a running dump call, for
/// `'a`.
pub(crate) struct DumpOut<'a> {
    skb: *mut kb::sk_buff,
    cb: *mut kb::netlink_callback,
    cmd: u8,
    _p: PhantomData<&'a kb::sk_buff>,
}

impl DumpOut<'_> {
    /// The largest attribute payload one more message can carry (a multiple
    /// of 4).
    pub(crate) fn room(&self) -> usize {
        // SAFETY: by the type invariant `skb` is live.
        unsafe { b::kapi_genl_dump_room(self.skb.cast()) }.max(0) as usize
    }

    /// Appends a message with one attribute `attr` of `len` bytes and gives
    /// its payload to fill (zeroed); `None` if it does not fit.
    pub(crate) fn add(&mut self, attr: u16, len: usize) -> Option<&mut [u8]> {
        let n = i32::try_from(len).ok()?;
        // SAFETY: by the type invariant `skb` and `cb` are live; the returned
        // payload has `len` bytes inside the skb, which lives (unsent) until
        // the dump call returns, and `&mut self` keeps them exclusive.
        unsafe {
            let p =
                b::kapi_genl_dump_add(self.skb.cast(), self.cb.cast(), self.cmd, attr.into(), n);
            let p = NonNull::new(p.cast::<u8>())?;
            let payload = core::slice::from_raw_parts_mut(p.as_ptr(), len);
            payload.fill(0);
            Some(payload)
        }
    }

    fn len(&self) -> i32 {
        // SAFETY: by the type invariant `skb` is live.
        unsafe { b::kapi_skb_len(self.skb.cast()) }
    }
}

/// An attribute policy allocated by the glue, freed when dropped.
///
/// # Invariants
/// `ptr` points to `maxattr + 1` entries allocated by `kapi_nla_policy_new`.
struct Policy {
    ptr: NonNull<kb::nla_policy>,
    maxattr: u16,
}

impl Policy {
    fn new(maxattr: u16) -> Result<Self> {
        // SAFETY: plain allocation; the result is checked.
        let p = unsafe { b::kapi_nla_policy_new(maxattr.into()) };
        // INVARIANT: allocated just above with `maxattr`.
        Ok(Self {
            ptr: NonNull::new(p).ok_or(ENOMEM)?,
            maxattr,
        })
    }

    fn binary(&mut self, attr: u16, max_len: u16) {
        // SAFETY: by the type invariant; the glue ignores attr > maxattr.
        unsafe {
            b::kapi_nla_policy_set_binary(
                self.ptr.as_ptr(),
                self.maxattr.into(),
                attr.into(),
                max_len,
            )
        };
    }

    fn u32(&mut self, attr: u16) {
        // SAFETY: by the type invariant; the glue ignores attr > maxattr.
        unsafe { b::kapi_nla_policy_set_u32(self.ptr.as_ptr(), self.maxattr.into(), attr.into()) };
    }
}

impl Drop for Policy {
    fn drop(&mut self) {
        // SAFETY: allocated by the glue (type invariant); a family using it
        // is unregistered (or was never registered) before it is dropped.
        unsafe { b::kapi_nla_policy_free(self.ptr.as_ptr()) };
    }
}

/// The genl structures and the handler, in one pinned allocation.
///
/// # Invariants
/// `family` is the first field (`repr(C)`), so a pointer to it (the genl
/// core's `info->family`) is a pointer to the whole value. The policies
/// outlive the family's registration (fields drop after `Family::drop`
/// unregisters it).
#[repr(C)]
struct FamilyData<H: Handler> {
    family: b::genl_family,
    small_ops: [b::genl_small_ops; 1],
    /// One per dump command; never resized once registered.
    ops: KVec<b::genl_ops>,
    policy: Policy,
    dump_policy: Policy,
    handler: H,
}

/// A registered family; unregistered when dropped.
///
/// # Invariants
/// `data.family` is registered with the genl core for as long as this value
/// lives.
pub(crate) struct Family<H: Handler> {
    data: Pin<KBox<FamilyData<H>>>,
}

// SAFETY: after registration the genl structures are only read by the genl
// core; unregistering may happen from any task; the handler is Send + Sync.
unsafe impl<H: Handler> Send for Family<H> {}
// SAFETY: `&Family` gives access to nothing but the id.
unsafe impl<H: Handler> Sync for Family<H> {}

/// The family data behind `family`.
///
/// # Safety
/// `family` must be the `family` field of a live `FamilyData<H>`.
unsafe fn family_data<'a, H: Handler>(family: *const b::genl_family) -> &'a FamilyData<H> {
    // SAFETY: per the contract and FamilyData's first-field invariant.
    unsafe { &*family.cast::<FamilyData<H>>() }
}

impl<H: Handler> Family<H> {
    /// Registers the family of `module`, served by `handler`.
    pub(crate) fn register(module: &'static ThisModule, handler: H) -> Result<Self> {
        const { assert!(H::REPLY_LEN <= i32::MAX as usize) };
        let n_ops = u8::try_from(H::DUMP_CMDS.len()).map_err(|_| EINVAL)?;
        if H::DUMP_CMDS.iter().any(|&cmd| cmd <= H::CMD) {
            return Err(EINVAL);
        }
        let name = H::NAME.as_bytes();
        let mut policy = Policy::new(H::REQUEST_ATTR)?;
        policy.binary(H::REQUEST_ATTR, H::REQUEST_MAX_LEN);
        let dump_max = H::DUMP_ATTRS.iter().copied().max().unwrap_or(0);
        let mut dump_policy = Policy::new(dump_max)?;
        for &attr in H::DUMP_ATTRS {
            dump_policy.u32(attr);
        }
        let data = FamilyData {
            // SAFETY: all-zero is a valid genl_family, genl_small_ops and
            // genl_ops (null pointers, no callbacks, zero counts).
            family: unsafe { core::mem::zeroed() },
            // SAFETY: as above.
            small_ops: unsafe { core::mem::zeroed() },
            ops: KVec::with_capacity(H::DUMP_CMDS.len(), GFP_KERNEL)?,
            policy,
            dump_policy,
            handler,
        };
        let mut data = KBox::pin(data, GFP_KERNEL)?;
        // SAFETY: we do not move out of the pinned value; the ops and
        // policies point into memory that lives as long as `data`.
        let family = unsafe {
            let d = data.as_mut().get_unchecked_mut();
            if name.len() >= d.family.name.len() {
                return Err(EINVAL);
            }
            for (dst, src) in d.family.name.iter_mut().zip(name) {
                *dst = *src as ffi::c_char;
            }
            d.family.version = H::VERSION;
            d.family.maxattr = u32::from(H::REQUEST_ATTR);
            d.family.set_parallel_ops(1);
            d.family.set_netnsok(0);
            // Commands below resv_start_op keep the legacy, lenient parsing.
            d.family.resv_start_op = H::CMD + 1;
            d.family.policy = d.policy.ptr.as_ptr();
            d.family.module = module.as_ptr().cast();
            let op = &mut d.small_ops[0];
            op.cmd = H::CMD;
            op.flags = b::GENL_ADMIN_PERM as u8;
            op.validate = (b::genl_validate_flags_GENL_DONT_VALIDATE_STRICT
                | b::genl_validate_flags_GENL_DONT_VALIDATE_DUMP) as u8;
            op.doit = Some(Self::doit);
            d.family.small_ops = d.small_ops.as_ptr();
            d.family.n_small_ops = 1;
            // Strictly validated (no validate flags), with their own policy.
            for &cmd in H::DUMP_CMDS {
                // SAFETY: all-zero is a valid genl_ops (see above).
                let mut op: b::genl_ops = core::mem::zeroed();
                op.cmd = cmd;
                op.flags = b::GENL_ADMIN_PERM as u8;
                op.policy = d.dump_policy.ptr.as_ptr();
                op.maxattr = u32::from(dump_max);
                op.start = Some(Self::dump_start);
                op.dumpit = Some(Self::dumpit);
                op.done = Some(Self::dump_done);
                // Within the capacity reserved above: no allocation.
                d.ops.push(op, GFP_KERNEL)?;
            }
            d.family.ops = d.ops.as_ptr();
            d.family.n_ops = n_ops;
            &mut d.family as *mut b::genl_family
        };
        // SAFETY: a fully initialized family in pinned memory that lives
        // until `drop` unregisters it.
        to_result(unsafe { b::genl_register_family(family) })?;
        // INVARIANT: registered just above.
        Ok(Self { data })
    }

    /// The family id the genl controller assigned.
    pub(crate) fn id(&self) -> u16 {
        self.data.family.id as u16
    }

    /// # Safety
    /// Only the genl core calls this, with a live request of this family.
    unsafe extern "C" fn doit(skb: *mut kb::sk_buff, info: *mut b::genl_info) -> ffi::c_int {
        // SAFETY: `info` is live and its family is ours (registered, alive
        // until after this call).
        let (family, data) = unsafe { ((*info).family, family_data::<H>((*info).family)) };
        // SAFETY: `info` and `family` are the live request and our family.
        let reply = unsafe { b::kapi_genl_reply_new(info, family, H::CMD, H::REPLY_LEN as i32) };
        // No reply, no action: the sender gets ENOMEM and nothing changed.
        let Some(reply_skb) = NonNull::new(reply.cast::<kb::sk_buff>()) else {
            return ENOMEM.to_errno();
        };
        // INVARIANT: the live request and its new, unsent reply.
        let request = Request {
            skb,
            info,
            attr: H::REQUEST_ATTR,
            _p: PhantomData,
        };
        let reply = Reply {
            info,
            skb: reply_skb,
            room: H::REPLY_LEN,
            _p: PhantomData,
        };
        match data.handler.handle(&request, reply) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    /// Only the genl core calls this, with the callback of a dump of this
    /// family being started.
    unsafe extern "C" fn dump_start(cb: *mut kb::netlink_callback) -> ffi::c_int {
        // SAFETY: a live dump of our family (registered, alive until after
        // its done).
        let data = unsafe { family_data::<H>(b::kapi_genl_dump_family(cb.cast())) };
        // INVARIANT: the live callback of this start.
        let request = DumpRequest {
            cb,
            _p: PhantomData,
        };
        let cursor = data.handler.start(&request).and_then(|c| {
            KBox::new(c, GFP_KERNEL).map_err(|_| Refusal {
                err: ENOMEM,
                msg: kernel::c_str!("out of memory for the dump"),
            })
        });
        match cursor {
            Ok(c) => {
                // SAFETY: the state slot of a live callback; `dump_done`
                // (always called once `start` succeeded) frees the box.
                unsafe { *b::kapi_genl_dump_state(cb.cast()) = KBox::into_raw(c).cast() };
                0
            }
            Err(r) => {
                // SAFETY: a live callback; the message is a static string.
                unsafe { b::kapi_genl_dump_set_err_msg(cb.cast(), r.msg.as_char_ptr()) };
                r.err.to_errno()
            }
        }
    }

    /// # Safety
    /// Only the genl core calls this, for a dump of this family whose start
    /// succeeded, with the buffer to fill.
    unsafe extern "C" fn dumpit(
        skb: *mut kb::sk_buff,
        cb: *mut kb::netlink_callback,
    ) -> ffi::c_int {
        // SAFETY: a live dump of our family; its state slot holds the cursor
        // `dump_start` boxed, used by no one else until `dump_done`.
        let (data, cursor) = unsafe {
            (
                family_data::<H>(b::kapi_genl_dump_family(cb.cast())),
                &mut *(*b::kapi_genl_dump_state(cb.cast())).cast::<H::Cursor>(),
            )
        };
        // INVARIANT: the buffer and callback of this dump call.
        let mut out = DumpOut {
            skb,
            cb,
            // SAFETY: `cb` is the live callback of this dump.
            cmd: unsafe { b::kapi_genl_dump_cmd(cb.cast()) },
            _p: PhantomData,
        };
        match data.handler.fill(cursor, &mut out) {
            // Nothing fitted in a whole buffer: the dump could never progress.
            Ok(true) if out.len() == 0 => -(kb::EMSGSIZE as ffi::c_int),
            Ok(true) => out.len(),
            Ok(false) => 0,
            Err(e) => e.to_errno(),
        }
    }

    /// # Safety
    /// Only the genl core calls this, once, when a dump of this family whose
    /// start succeeded ends.
    unsafe extern "C" fn dump_done(cb: *mut kb::netlink_callback) -> ffi::c_int {
        // SAFETY: the state slot holds the box `dump_start` leaked; this is
        // the dump's last callback.
        drop(unsafe { KBox::from_raw((*b::kapi_genl_dump_state(cb.cast())).cast::<H::Cursor>()) });
        0
    }
}

impl<H: Handler> Drop for Family<H> {
    fn drop(&mut self) {
        // SAFETY: registered (type invariant); unregistering waits for running
        // handlers and dumps, after which the structures may be freed.
        unsafe { b::genl_unregister_family(&self.data.family) };
    }
}
