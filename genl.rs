// SPDX-License-Identifier: GPL-2.0

//! A safe wrapper over a generic-netlink family with one `doit` command.
//!
//! [`Family`] registers the family and unregisters it when dropped. The
//! [`Handler`] gets the request attribute as a byte slice and answers through
//! [`Reply`]. Requests run with `parallel_ops` (no global genl mutex), with
//! legacy (lenient) attribute validation for the command, admin-only.

use crate::bindings as b;
use core::{
    marker::PhantomData,
    ptr::NonNull,
    sync::atomic::{AtomicI32, Ordering},
};
use kernel::{error::to_result, ffi, prelude::*, str::CStr, ThisModule};

/// A family's one command.
pub(crate) trait Handler {
    /// Family name (at most 15 bytes).
    const NAME: &'static CStr;
    /// Family version.
    const VERSION: u32;
    /// The command number.
    const CMD: u8;
    /// Attribute holding the request; also the family's `maxattr`.
    const REQUEST_ATTR: u32;

    /// Bytes of the reply's one attribute.
    const REPLY_LEN: usize;

    /// Handles a request (`None` if the attribute is missing). `reply` is
    /// allocated before the call: a handler that acts on the request can
    /// always report that it did.
    fn handle(request: Option<&[u8]>, reply: Reply<'_>) -> Result;
}

/// A reply to the request being handled, allocated with room for one
/// attribute of [`Handler::REPLY_LEN`] bytes; freed if dropped unsent.
pub(crate) struct Reply<'a> {
    info: *mut b::genl_info,
    skb: NonNull<kernel::bindings::sk_buff>,
    room: usize,
    _p: PhantomData<&'a b::genl_info>,
}

impl Reply<'_> {
    /// Sends the reply with one attribute `attr` holding `data` (at most the
    /// `REPLY_LEN` bytes it was allocated for).
    pub(crate) fn send(self, attr: i32, data: &[u8]) -> Result {
        if data.len() > self.room {
            return Err(EINVAL);
        }
        // At most `room`, which fits in i32 (checked where the reply is made).
        let len = data.len() as i32;
        let this = core::mem::ManuallyDrop::new(self);
        // SAFETY: `skb` is the unsent reply made for the live request `info`
        // with room for `room >= len` bytes; `data` is valid for `len` bytes;
        // the call consumes the skb, so it is not freed again (ManuallyDrop).
        to_result(unsafe {
            b::dm_switch_genl_reply_send(
                this.skb.as_ptr().cast(),
                this.info,
                attr,
                data.as_ptr().cast(),
                len,
            )
        })
    }
}

impl Drop for Reply<'_> {
    fn drop(&mut self) {
        // SAFETY: an unsent reply owns its skb.
        unsafe { b::dm_switch_genl_reply_free(self.skb.as_ptr().cast()) };
    }
}

/// The family id the controller assigned, 0 while unregistered.
static FAMILY_ID: AtomicI32 = AtomicI32::new(0);

/// The registered family's id (0 if none is registered).
pub(crate) fn family_id() -> i32 {
    FAMILY_ID.load(Ordering::Relaxed)
}

/// The genl structures, which must stay put while registered.
struct FamilyData {
    family: b::genl_family,
    ops: [b::genl_small_ops; 1],
}

/// A registered family; unregistered on drop.
pub(crate) struct Family<H: Handler> {
    data: Pin<KBox<FamilyData>>,
    _h: PhantomData<H>,
}

// SAFETY: after registration the structures are only read by the genl core;
// unregistering may happen from any task.
unsafe impl<H: Handler> Send for Family<H> {}
// SAFETY: `&Family` gives no access to the structures.
unsafe impl<H: Handler> Sync for Family<H> {}

impl<H: Handler> Family<H> {
    /// Registers the family, in the initial network namespace only.
    pub(crate) fn register(module: &'static ThisModule) -> Result<Self> {
        // SAFETY: all-zero is a valid genl_family and genl_small_ops (null
        // pointers, no callbacks, zero counts).
        let mut data: FamilyData = unsafe { core::mem::zeroed() };
        let name = H::NAME.as_bytes();
        if name.len() >= data.family.name.len() {
            return Err(EINVAL);
        }
        for (d, s) in data.family.name.iter_mut().zip(name) {
            *d = *s as ffi::c_char;
        }
        data.family.version = H::VERSION;
        data.family.maxattr = H::REQUEST_ATTR;
        data.family.set_parallel_ops(1);
        data.family.set_netnsok(0);
        // Commands below resv_start_op keep the legacy, lenient parsing.
        data.family.resv_start_op = H::CMD + 1;
        // SAFETY: taking the address of a static array defined in the glue.
        data.family.policy = unsafe { b::dm_switch_genl_policy.as_ptr() };
        data.family.module = module.as_ptr().cast();
        data.family.n_small_ops = 1;
        data.ops[0].cmd = H::CMD;
        data.ops[0].flags = b::GENL_ADMIN_PERM as u8;
        data.ops[0].validate = (b::genl_validate_flags_GENL_DONT_VALIDATE_STRICT
            | b::genl_validate_flags_GENL_DONT_VALIDATE_DUMP) as u8;
        data.ops[0].doit = Some(Self::doit);
        let mut data = KBox::pin(data, GFP_KERNEL)?;
        // SAFETY: `data` is pinned and lives until `drop` unregisters the
        // family; `small_ops` points into the same allocation.
        let family = unsafe {
            let d = data.as_mut().get_unchecked_mut();
            d.family.small_ops = d.ops.as_ptr();
            &mut d.family as *mut b::genl_family
        };
        // SAFETY: a fully initialized family in pinned memory (see above).
        to_result(unsafe { b::genl_register_family(family) })?;
        // SAFETY: registered; the genl core wrote `id` during registration.
        FAMILY_ID.store(unsafe { (*family).id }, Ordering::Relaxed);
        Ok(Self {
            data,
            _h: PhantomData,
        })
    }

    /// # Safety
    /// Only the genl core calls this, with a live request of this family.
    unsafe extern "C" fn doit(
        _skb: *mut kernel::bindings::sk_buff,
        info: *mut b::genl_info,
    ) -> ffi::c_int {
        let mut len: u32 = 0;
        // SAFETY: the genl core calls doit with a live `info` whose attrs were
        // parsed against our policy; the payload lives through the call.
        let request = unsafe {
            let p = b::dm_switch_genl_msg(info, H::REQUEST_ATTR as i32, &mut len);
            (!p.is_null()).then(|| core::slice::from_raw_parts(p.cast::<u8>(), len as usize))
        };
        // SAFETY: `info` is live; its family is ours, registered.
        let family = unsafe { (*info).family };
        const { assert!(H::REPLY_LEN <= i32::MAX as usize) };
        let room = H::REPLY_LEN as i32;
        // SAFETY: `info` and `family` are the live request and our family.
        let skb = unsafe { b::dm_switch_genl_reply_new(info, family, H::CMD, room) };
        // No reply, no action: the sender gets ENOMEM and nothing changed.
        let Some(skb) = NonNull::new(skb.cast::<kernel::bindings::sk_buff>()) else {
            return ENOMEM.to_errno();
        };
        let reply = Reply {
            info,
            skb,
            room: H::REPLY_LEN,
            _p: PhantomData,
        };
        match H::handle(request, reply) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }
}

impl<H: Handler> Drop for Family<H> {
    fn drop(&mut self) {
        FAMILY_ID.store(0, Ordering::Relaxed);
        // SAFETY: registered in `register`; unregistering waits for running
        // handlers, after which the structures may be freed.
        unsafe { b::genl_unregister_family(&self.data.family) };
    }
}
