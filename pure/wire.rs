// SPDX-License-Identifier: GPL-2.0

//! The kernel's half of the DM_SWITCH wire format ([`super::abi`]): decoding
//! an upload request from the bytes of a netlink attribute, and building the
//! reply.
//!
//! Requests are decoded field by field from a byte slice, never by casting a
//! pointer, so an unaligned or short payload cannot be misread. Pure code,
//! also compiled into the host tests.

use super::abi::{
    field_mask, fields_per_word, pg, read_u32, resp, write_u32, PgTableHeader, CHUNK_PTE_COUNT,
    MAX_ERR_STR_LEN, OPCODE_PAGE_TABLE_UPLOAD,
};
use core::fmt;

/// A decoded, self-consistent upload request.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// The header fields.
    pub(crate) header: PgTableHeader,
    packed: &'a [u8],
}

/// Why a request was refused before it reached any table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WireError {
    /// Payload shorter than the header.
    TooShort(usize),
    /// Unknown opcode.
    BadOpcode(u32),
    /// `pte_bits` is 0 or above 32.
    BadPteBits(u8),
    /// `pte_bits` cannot hold every path index of `dev_count` paths.
    PteBitsTooNarrow(u8, u16),
    /// `dev_count` is 0.
    NoDevices,
    /// `page_offset` is not a multiple of the fields per word.
    Unaligned(u32, u32),
    /// `page_offset + page_count` exceeds `page_total`.
    PastEnd(u32, u32, u32),
    /// Payload holds fewer packed bytes than `page_count` needs.
    Truncated(usize, usize),
    /// A chunk free (`page_count` 0) whose offset is not chunk-aligned.
    UnalignedFree(u32),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TooShort(n) => {
                write!(
                    f,
                    "message too short: {n} bytes, header needs {}",
                    pg::HDR_LEN
                )
            }
            Self::BadOpcode(op) => write!(
                f,
                "unknown opcode {op} (expected {OPCODE_PAGE_TABLE_UPLOAD})"
            ),
            Self::BadPteBits(b) => write!(f, "invalid pte_bits {b} (must be 1..32)"),
            Self::PteBitsTooNarrow(b, n) => {
                write!(f, "pte_bits {b} too narrow for {n} devices")
            }
            Self::NoDevices => write!(f, "dev_count is 0"),
            Self::Unaligned(off, fields) => write!(
                f,
                "unaligned window: page_offset {off} is not a multiple of {fields} entries per word"
            ),
            Self::PastEnd(off, count, total) => write!(
                f,
                "window past the table: page_offset {off} + page_count {count} > page_total {total}"
            ),
            Self::Truncated(need, have) => write!(
                f,
                "incomplete message: {need} bytes of entries needed, {have} present"
            ),
            Self::UnalignedFree(off) => write!(
                f,
                "cannot free a chunk at page_offset {off}: not a multiple of {CHUNK_PTE_COUNT}"
            ),
        }
    }
}

impl<'a> Request<'a> {
    /// Decodes and checks a request's own consistency. `total_len` is
    /// informational and ignored; bytes past the last needed word are ignored.
    pub(crate) fn parse(msg: &'a [u8]) -> Result<Self, WireError> {
        if msg.len() < pg::HDR_LEN {
            return Err(WireError::TooShort(msg.len()));
        }
        let opcode = read_u32(msg, pg::OPCODE);
        if opcode != OPCODE_PAGE_TABLE_UPLOAD {
            return Err(WireError::BadOpcode(opcode));
        }
        let header = PgTableHeader::read(msg);
        let PgTableHeader {
            dev_count,
            pte_bits,
            page_total,
            page_offset,
            page_count,
            ..
        } = header;
        if pte_bits == 0 || pte_bits > 32 {
            return Err(WireError::BadPteBits(pte_bits));
        }
        if dev_count == 0 {
            return Err(WireError::NoDevices);
        }
        if u64::from(dev_count - 1) >> pte_bits != 0 {
            return Err(WireError::PteBitsTooNarrow(pte_bits, dev_count));
        }
        let fields = fields_per_word(pte_bits);
        if page_offset % fields != 0 {
            return Err(WireError::Unaligned(page_offset, fields));
        }
        if u64::from(page_offset) + u64::from(page_count) > u64::from(page_total) {
            return Err(WireError::PastEnd(page_offset, page_count, page_total));
        }
        if page_count == 0 && page_offset % CHUNK_PTE_COUNT != 0 {
            return Err(WireError::UnalignedFree(page_offset));
        }
        // At most 2^32 words of 4 bytes: fits in usize on 64-bit.
        let need = page_count.div_ceil(fields) as usize * 4;
        let packed = &msg[pg::HDR_LEN..];
        if packed.len() < need {
            return Err(WireError::Truncated(need, packed.len()));
        }
        Ok(Self {
            header,
            packed: &packed[..need],
        })
    }

    /// The window's entries, in region order (least significant field first).
    pub(crate) fn values(&self) -> impl Iterator<Item = u32> + '_ {
        let bits = u32::from(self.header.pte_bits);
        let mask = field_mask(self.header.pte_bits);
        let fields = fields_per_word(self.header.pte_bits);
        self.packed
            .chunks_exact(4)
            .flat_map(move |w| {
                let word = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
                (0..fields).map(move |f| (word >> (f * bits)) & mask)
            })
            .take(self.header.page_count as usize)
    }

    /// `(region, path)` pairs of the window.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        // A bounded range: `zip` advances its first iterator once more after
        // the last value, and an open one (`page_offset..`) then stepped past
        // u32::MAX for a window ending at the last region of a table of
        // u32::MAX regions (an overflow panic, an oops). parse() checked
        // page_offset + page_count <= page_total, so the sum cannot saturate.
        let end = self
            .header
            .page_offset
            .saturating_add(self.header.page_count);
        (self.header.page_offset..end).zip(self.values())
    }
}

/// The request fields a reply echoes (all zero if the request was too short).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Echo {
    /// `userland[2]`.
    pub(crate) userland: [u32; 2],
    /// `dev_major`.
    pub(crate) dev_major: u32,
    /// `dev_minor`.
    pub(crate) dev_minor: u32,
}

impl Echo {
    /// Reads the echoed fields from whatever part of the header is present.
    pub(crate) fn of(msg: &[u8]) -> Self {
        Self {
            userland: [read_u32(msg, pg::USERLAND), read_u32(msg, pg::USERLAND + 4)],
            dev_major: read_u32(msg, pg::DEV_MAJOR),
            dev_minor: read_u32(msg, pg::DEV_MINOR),
        }
    }
}

/// Size of `struct IpcResponse`.
pub(crate) const RESPONSE_LEN: usize = resp::LEN;

/// A `struct IpcResponse` being built.
pub(crate) struct Response {
    bytes: [u8; RESPONSE_LEN],
    err_len: usize,
}

impl Response {
    /// A success reply echoing `echo`.
    pub(crate) fn new(echo: Echo) -> Self {
        let mut r = Self {
            bytes: [0; RESPONSE_LEN],
            err_len: 0,
        };
        let b = &mut r.bytes;
        write_u32(b, resp::TOTAL_LEN, RESPONSE_LEN as u32);
        write_u32(b, resp::OPCODE, OPCODE_PAGE_TABLE_UPLOAD);
        write_u32(b, resp::USERLAND, echo.userland[0]);
        write_u32(b, resp::USERLAND + 4, echo.userland[1]);
        write_u32(b, resp::DEV_MAJOR, echo.dev_major);
        write_u32(b, resp::DEV_MINOR, echo.dev_minor);
        r
    }

    /// Marks the reply failed with positive `errno` and the message `why`
    /// (truncated to `MAX_ERR_STR_LEN` bytes, NUL-terminated).
    pub(crate) fn fail(&mut self, errno: u32, why: fmt::Arguments<'_>) {
        write_u32(&mut self.bytes, resp::STATUS, errno);
        self.bytes[resp::ERR_STR..].fill(0);
        self.err_len = 0;
        // Writing into a fixed buffer cannot fail; overflow is truncated.
        let _ = fmt::write(self, why);
    }

    /// The encoded `struct IpcResponse`.
    pub(crate) fn as_bytes(&self) -> &[u8; RESPONSE_LEN] {
        &self.bytes
    }
}

impl fmt::Write for Response {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = MAX_ERR_STR_LEN.saturating_sub(self.err_len);
        let n = s.len().min(room);
        let at = resp::ERR_STR + self.err_len;
        self.bytes[at..at + n].copy_from_slice(&s.as_bytes()[..n]);
        self.err_len += n;
        Ok(())
    }
}
