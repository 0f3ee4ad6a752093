// SPDX-License-Identifier: GPL-2.0

//! Text in and out of DM callbacks: the argument vector of `ctr` and
//! `message`, and the bounded result buffer of `status` and `message`.

use core::fmt;
use kernel::{ffi::c_char, prelude::*, str::CStr};

/// Bounded text output into a DM result buffer; truncates silently like
/// `DMEMIT`, always NUL-terminated.
pub(crate) struct TextOut<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl fmt::Write for TextOut<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Keep one byte for the NUL.
        let room = self.buf.len().saturating_sub(self.len + 1);
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if let Some(nul) = self.buf.get_mut(self.len) {
            *nul = 0;
        }
        Ok(())
    }
}

impl TextOut<'_> {
    /// # Safety
    /// `buf` must be null or valid for writes of `len` bytes for `'a`.
    pub(super) unsafe fn new<'a>(buf: *mut c_char, len: u32) -> TextOut<'a> {
        let buf: &mut [u8] = if buf.is_null() || len == 0 {
            &mut []
        } else {
            // SAFETY: per the contract.
            unsafe { core::slice::from_raw_parts_mut(buf.cast(), len as usize) }
        };
        if let Some(first) = buf.first_mut() {
            *first = 0;
        }
        TextOut { buf, len: 0 }
    }
}

/// Collects the NUL-terminated argument strings DM passes (`argc`, `argv`).
///
/// # Safety
/// `argv` must point to `argc` valid C strings that outlive `'a`.
pub(super) unsafe fn args<'a>(argc: u32, argv: *mut *mut c_char) -> Result<KVec<&'a CStr>> {
    let mut v = KVec::with_capacity(argc as usize, GFP_KERNEL)?;
    for i in 0..argc as usize {
        // SAFETY: per the contract, `argv[i]` for `i < argc` is a valid C string.
        v.push(unsafe { CStr::from_char_ptr(*argv.add(i)) }, GFP_KERNEL)?;
    }
    Ok(v)
}
