// SPDX-License-Identifier: GPL-2.0

//! A generic-netlink family with one `doit` command (`net/genetlink.h`).
//!
//! [`Family`] registers the family and unregisters it when dropped; it owns
//! its [`Handler`], which gets each request as a [`Request`] and answers
//! through a [`Reply`] allocated before it is called. Requests run with
//! `parallel_ops` (no global genl mutex), in the initial network namespace,
//! with legacy (lenient) attribute validation for the command (it is below
//! `resv_start_op`), and only for senders with CAP_NET_ADMIN
//! (`GENL_ADMIN_PERM`).

use crate::kapi::bindings as b;
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{bindings as kb, error::to_result, ffi, prelude::*, ThisModule};

/// A family's one command.
pub(crate) trait Handler: Send + Sync + Sized {
    /// Family name (at most 15 bytes, no NUL).
    const NAME: &'static str;
    /// Family version.
    const VERSION: u32;
    /// The command number.
    const CMD: u8;
    /// Attribute holding the request (`NLA_BINARY`); also the family's
    /// `maxattr`.
    const REQUEST_ATTR: u16;
    /// Largest request attribute payload in bytes; longer ones are refused
    /// by the genl core's policy check.
    const REQUEST_MAX_LEN: u16;
    /// Bytes of the reply's one attribute.
    const REPLY_LEN: usize;

    /// Handles a request. `reply` is allocated before the call: a handler
    /// that acts on the request can always report that it did.
    fn handle(&self, request: &Request<'_>, reply: Reply<'_>) -> Result;
}

/// A Linux capability a request's sender may hold.
#[derive(Clone, Copy)]
pub(crate) struct Capability(u32);

impl Capability {
    /// `CAP_SYS_ADMIN`.
    pub(crate) const SYS_ADMIN: Self = Self(kb::CAP_SYS_ADMIN);
}

/// The request being handled.
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

    /// Whether the sender holds `cap` (`netlink_capable()`: checked against
    /// the credentials the socket was opened with as well as the sending
    /// task's, as netlink requires; plain `capable()` would check only the
    /// task).
    pub(crate) fn sender_capable(&self, cap: Capability) -> bool {
        // SAFETY: by the type invariant `skb` is the live request skb.
        unsafe { b::netlink_capable(self.skb.cast(), cap.0 as i32) }
    }
}

/// A reply to the request being handled, allocated with room for one
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

/// The genl structures and the handler, in one pinned allocation.
///
/// # Invariants
/// `family` is the first field (`repr(C)`), so a pointer to it (the genl
/// core's `info->family`) is a pointer to the whole value. `policy` is the
/// family's policy, allocated by the glue, owned here.
#[repr(C)]
struct FamilyData<H: Handler> {
    family: b::genl_family,
    ops: [b::genl_small_ops; 1],
    policy: *const ffi::c_void,
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

impl<H: Handler> Family<H> {
    /// Registers the family of `module`, served by `handler`.
    pub(crate) fn register(module: &'static ThisModule, handler: H) -> Result<Self> {
        const { assert!(H::REPLY_LEN <= i32::MAX as usize) };
        // SAFETY: plain allocation; the result is checked below.
        let policy = unsafe {
            b::kapi_nla_policy_binary_new(
                i32::from(H::REQUEST_ATTR),
                i32::from(H::REQUEST_ATTR),
                H::REQUEST_MAX_LEN,
            )
        };
        if policy.is_null() {
            return Err(ENOMEM);
        }
        let data = FamilyData {
            // SAFETY: all-zero is a valid genl_family and genl_small_ops
            // (null pointers, no callbacks, zero counts).
            family: unsafe { core::mem::zeroed() },
            // SAFETY: as above.
            ops: unsafe { core::mem::zeroed() },
            policy: policy.cast(),
            handler,
        };
        // From here on, dropping `data` frees the policy.
        let mut data = KBox::pin(data, GFP_KERNEL)?;
        // SAFETY: we do not move out of the pinned value; `small_ops` and
        // `policy` point into memory that lives as long as `data`.
        let family = unsafe {
            let d = data.as_mut().get_unchecked_mut();
            let name = H::NAME.as_bytes();
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
            d.family.policy = d.policy.cast();
            d.family.module = module.as_ptr().cast();
            d.ops[0].cmd = H::CMD;
            d.ops[0].flags = b::GENL_ADMIN_PERM as u8;
            d.ops[0].validate = (b::genl_validate_flags_GENL_DONT_VALIDATE_STRICT
                | b::genl_validate_flags_GENL_DONT_VALIDATE_DUMP)
                as u8;
            d.ops[0].doit = Some(Self::doit);
            d.family.small_ops = d.ops.as_ptr();
            d.family.n_small_ops = 1;
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
        // SAFETY: `info` is live and its family is ours: `info->family`
        // points at the first field of our pinned FamilyData (its invariant),
        // which lives until the family is unregistered, after this call.
        let (family, data) = unsafe {
            let family = (*info).family;
            (family, &*family.cast::<FamilyData<H>>())
        };
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
}

impl<H: Handler> Drop for FamilyData<H> {
    fn drop(&mut self) {
        // SAFETY: allocated by the glue in `register`; the family using it is
        // unregistered (or was never registered) before this value is freed.
        unsafe { b::kapi_nla_policy_free(self.policy.cast()) };
    }
}

impl<H: Handler> Drop for Family<H> {
    fn drop(&mut self) {
        // SAFETY: registered (type invariant); unregistering waits for running
        // handlers, after which the structures may be freed.
        unsafe { b::genl_unregister_family(&self.data.family) };
    }
}
