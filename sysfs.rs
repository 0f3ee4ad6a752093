// SPDX-License-Identifier: GPL-2.0

//! `/sys/module/dm_switch/familyid` and `/sys/module/dm_switch/version`:
//! read-only attributes on the module's kobject, as in the RFC, so agents can
//! find the netlink family and check the module version.
//!
//! They are `struct module_attribute`s because the module kobject's sysfs ops
//! call `module_attribute::show`. No `MODULE_VERSION` is set, so the loader
//! does not create a `version` file of its own.

use core::{cell::UnsafeCell, fmt::Write};
use kernel::c_str;
use kernel::ffi::c_char;
use kernel::{bindings as kb, error::to_result, prelude::*, str::CStr, ThisModule};

/// A static module attribute.
struct Attr(UnsafeCell<kb::module_attribute>);

// SAFETY: sysfs only reads the attribute after registration; we never write it.
unsafe impl Sync for Attr {}

type ShowFn =
    unsafe extern "C" fn(*mut kb::module_attribute, *mut kb::module_kobject, *mut c_char) -> isize;

impl Attr {
    const fn new(name: &'static CStr, show: ShowFn) -> Self {
        // SAFETY: all-zero is a valid module_attribute (no callbacks) and a
        // valid attribute (its lockdep key, unused for static attributes).
        let mut a: kb::module_attribute = unsafe { core::mem::zeroed() };
        a.attr.name = name.as_char_ptr();
        a.attr.mode = 0o444;
        a.show = Some(show);
        Self(UnsafeCell::new(a))
    }

    fn attribute(&self) -> *const kb::attribute {
        // SAFETY: a field address inside a static; nothing is read or written.
        unsafe { &raw const (*self.0.get()).attr }
    }
}

static FAMILYID: Attr = Attr::new(c_str!("familyid"), show_familyid);
static VERSION: Attr = Attr::new(c_str!("version"), show_version);

/// Writes `args` into the PAGE_SIZE sysfs buffer `buf`; returns the length.
///
/// # Safety
/// `buf` must be the PAGE_SIZE buffer sysfs passes to `show`.
unsafe fn emit(buf: *mut c_char, args: core::fmt::Arguments<'_>) -> isize {
    // SAFETY: sysfs show buffers are PAGE_SIZE bytes, exclusively ours here.
    let page = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), kb::PAGE_SIZE) };
    let mut out = PageOut { page, len: 0 };
    let _ = out.write_fmt(args);
    out.len as isize
}

struct PageOut<'a> {
    page: &'a mut [u8],
    len: usize,
}

impl Write for PageOut<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.page.len() - self.len);
        self.page[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// # Safety
/// Only sysfs calls this, with its PAGE_SIZE output buffer.
unsafe extern "C" fn show_familyid(
    _a: *mut kb::module_attribute,
    _m: *mut kb::module_kobject,
    buf: *mut c_char,
) -> isize {
    // SAFETY: called by sysfs with its PAGE_SIZE buffer.
    unsafe { emit(buf, format_args!("{}\n", crate::netlink::family_id())) }
}

/// # Safety
/// Only sysfs calls this, with its PAGE_SIZE output buffer.
unsafe extern "C" fn show_version(
    _a: *mut kb::module_attribute,
    _m: *mut kb::module_kobject,
    buf: *mut c_char,
) -> isize {
    let [a, b, c] = crate::VERSION;
    // SAFETY: called by sysfs with its PAGE_SIZE buffer.
    unsafe { emit(buf, format_args!("{a}.{b}.{c}\n")) }
}

/// The two files, removed when dropped.
pub(crate) struct Files {
    kobj: *mut kb::kobject,
    created: usize,
}

// SAFETY: the module kobject lives as long as the module; removing files may
// happen from any task.
unsafe impl Send for Files {}
// SAFETY: `&Files` gives no access to anything.
unsafe impl Sync for Files {}

impl Files {
    /// Creates both files on `module`'s kobject (none if either fails).
    pub(crate) fn create(module: &'static ThisModule) -> Result<Self> {
        // SAFETY: THIS_MODULE of a loaded module; its kobject is live until exit.
        let kobj = unsafe { &raw mut (*module.as_ptr()).mkobj.kobj };
        let mut files = Self { kobj, created: 0 };
        for attr in [&FAMILYID, &VERSION] {
            // SAFETY: `kobj` is live; the attribute is static and initialized.
            to_result(unsafe {
                kb::sysfs_create_file_ns(kobj, attr.attribute(), core::ptr::null())
            })?;
            files.created += 1;
        }
        Ok(files)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        for attr in [&FAMILYID, &VERSION].into_iter().take(self.created).rev() {
            // SAFETY: created in `create` on this live kobject.
            unsafe { kb::sysfs_remove_file_ns(self.kobj, attr.attribute(), core::ptr::null()) };
        }
    }
}
