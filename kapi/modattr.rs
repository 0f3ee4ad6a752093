// SPDX-License-Identifier: GPL-2.0

//! Read-only files on a module's sysfs directory (`/sys/module/<name>/`).
//!
//! The module kobject's sysfs ops call `struct module_attribute::show`, so
//! each file is a `module_attribute` whose content is any
//! [`Display`](core::fmt::Display) value, printed with a trailing newline.

use crate::kapi::bindings as b;
use core::fmt::{self, Display, Write};
use kernel::ffi::c_char;
use kernel::{bindings as kb, error::to_result, prelude::*, str::CStr, types::Opaque, ThisModule};

/// The attribute and the value it shows, in one pinned allocation.
///
/// # Invariants
/// `attr` is the first field (`repr(C)`), so the `module_attribute` pointer
/// sysfs passes to `show` is a pointer to the whole value.
#[repr(C)]
struct AttrData<T> {
    attr: Opaque<kb::module_attribute>,
    value: T,
}

/// A read-only file `name` on a module's directory showing `value`; removed
/// when dropped.
///
/// # Invariants
/// `data.attr` is a file of the live module kobject `kobj` while this value
/// lives.
pub(crate) struct File<T: Display + Send + Sync> {
    kobj: *mut kb::kobject,
    data: Pin<KBox<AttrData<T>>>,
}

// SAFETY: the module kobject lives as long as the module; removing the file
// may happen from any task; `T` is Send + Sync.
unsafe impl<T: Display + Send + Sync> Send for File<T> {}
// SAFETY: `&File` gives access to nothing.
unsafe impl<T: Display + Send + Sync> Sync for File<T> {}

impl<T: Display + Send + Sync> File<T> {
    /// Creates `/sys/module/<module>/<name>` (mode 0444) showing `value`.
    pub(crate) fn create(
        module: &'static ThisModule,
        name: &'static CStr,
        value: T,
    ) -> Result<Self> {
        // SAFETY: all-zero is a valid module_attribute (no callbacks).
        let mut attr: kb::module_attribute = unsafe { core::mem::zeroed() };
        attr.attr.name = name.as_char_ptr();
        attr.attr.mode = 0o444;
        attr.show = Some(Self::show);
        let data = KBox::pin(
            AttrData {
                attr: Opaque::new(attr),
                value,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: a field address inside our pinned allocation.
        let attribute = unsafe { &raw mut (*data.attr.get()).attr };
        // SAFETY: the attribute is ours and not yet visible to sysfs.
        unsafe { b::kapi_sysfs_attr_init(attribute.cast()) };
        // SAFETY: THIS_MODULE of a loaded module; its kobject is live until
        // the module exits, after every File of it is dropped.
        let kobj = unsafe { &raw mut (*module.as_ptr()).mkobj.kobj };
        // SAFETY: `kobj` is live; the attribute is initialized and pinned
        // until `drop` removes it.
        to_result(unsafe { kb::sysfs_create_file_ns(kobj, attribute, core::ptr::null()) })?;
        // INVARIANT: created just above.
        Ok(Self { kobj, data })
    }

    /// # Safety
    /// Only sysfs calls this, for an attribute made by [`File::create`], with
    /// its PAGE_SIZE output buffer.
    unsafe extern "C" fn show(
        attr: *mut kb::module_attribute,
        _mk: *mut kb::module_kobject,
        buf: *mut c_char,
    ) -> isize {
        // SAFETY: `attr` is the first field of a live AttrData<T> (its
        // invariant; the file is removed before the data is freed), and
        // sysfs show buffers are PAGE_SIZE bytes, exclusively ours here.
        let (value, page) = unsafe {
            (
                &(*attr.cast::<AttrData<T>>()).value,
                core::slice::from_raw_parts_mut(buf.cast::<u8>(), kb::PAGE_SIZE),
            )
        };
        let mut out = PageOut { page, len: 0 };
        let _ = writeln!(out, "{value}");
        out.len as isize
    }
}

impl<T: Display + Send + Sync> Drop for File<T> {
    fn drop(&mut self) {
        // SAFETY: created in `create` on this live kobject (type invariant);
        // removal waits for running `show` calls.
        unsafe {
            kb::sysfs_remove_file_ns(
                self.kobj,
                &raw const (*self.data.attr.get()).attr,
                core::ptr::null(),
            )
        };
    }
}

/// Text written into a sysfs page, truncated at its end.
struct PageOut<'a> {
    page: &'a mut [u8],
    len: usize,
}

impl Write for PageOut<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.page.len() - self.len);
        self.page[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
