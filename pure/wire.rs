// SPDX-License-Identifier: GPL-2.0

//! The DM_SWITCH wire format (`include/uapi/dm-switch.h`): decoding an upload
//! request from the bytes of a netlink attribute, and building the reply.
//!
//! Requests are decoded field by field from a byte slice, never by casting a
//! pointer, so an unaligned or short payload cannot be misread. Pure code,
//! also compiled into the host tests.

use core::fmt;

/// Family version (`DM_SWITCH_FAMILY_VERSION`).
pub(crate) const FAMILY_VERSION: u32 = 1;
/// The upload command (`NETLINK_CMD_GET_PAGE_TBL`).
pub(crate) const CMD_GET_PAGE_TBL: u8 = 1;
/// The request attribute (`NETLINK_ATTR_MSG`).
pub(crate) const ATTR_MSG: u16 = 1;
/// Attribute type of the reply: the RFC used the policy constant `NLA_BINARY`.
pub(crate) const ATTR_RESPONSE: u16 = 11;
/// Largest `NETLINK_ATTR_MSG` payload (`MAX_IPC_MSG_LEN`).
pub(crate) const MAX_IPC_MSG_LEN: u16 = 65480;
/// Bytes before `ptbl_buff` in `struct IpcPgTable`.
pub(crate) const HEADER_LEN: usize = 40;
/// Size of `struct IpcResponse`.
pub(crate) const RESPONSE_LEN: usize = 284;
/// The only opcode: upload a page-table window.
pub(crate) const OPCODE_PAGE_TABLE_UPLOAD: u32 = 1;
/// Entries per chunk, as the ABI fixes it (`CHUNK_PTE_COUNT`).
pub(crate) const CHUNK_PTE_COUNT: u32 = 1 << 13;
/// Room for `err_str`, its NUL included.
const ERR_STR_LEN: usize = 256;

/// A decoded, self-consistent upload request.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// `userland[2]`: opaque words shown in status.
    pub userland: [u32; 2],
    /// Device-mapper device the window is for.
    pub dev_major: u32,
    /// See `dev_major`.
    pub dev_minor: u32,
    /// Regions in the whole table.
    pub page_total: u32,
    /// First region of the window.
    pub page_offset: u32,
    /// Regions in the window; 0 frees the chunk at `page_offset`.
    pub page_count: u32,
    /// Paths the sender believes the target has.
    pub dev_count: u16,
    /// Bits per entry on the wire.
    pub pte_bits: u8,
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
                write!(f, "message too short: {n} bytes, header needs {HEADER_LEN}")
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

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        w.copy_from_slice(s);
    }
    u32::from_ne_bytes(w)
}

/// Entries of `pte_bits` bits in one 32-bit word.
pub(crate) fn fields_per_word(pte_bits: u8) -> u32 {
    32 / u32::from(pte_bits.max(1))
}

impl<'a> Request<'a> {
    /// Decodes and checks a request's own consistency. `total_len` is
    /// informational and ignored; bytes past the last needed word are ignored.
    pub(crate) fn parse(msg: &'a [u8]) -> Result<Self, WireError> {
        if msg.len() < HEADER_LEN {
            return Err(WireError::TooShort(msg.len()));
        }
        let opcode = u32_at(msg, 4);
        if opcode != OPCODE_PAGE_TABLE_UPLOAD {
            return Err(WireError::BadOpcode(opcode));
        }
        let dev_count = u16::from_ne_bytes([msg[36], msg[37]]);
        let pte_bits = msg[38];
        if pte_bits == 0 || pte_bits > 32 {
            return Err(WireError::BadPteBits(pte_bits));
        }
        if dev_count == 0 {
            return Err(WireError::NoDevices);
        }
        if u64::from(dev_count - 1) >> pte_bits != 0 {
            return Err(WireError::PteBitsTooNarrow(pte_bits, dev_count));
        }
        let (page_total, page_offset, page_count) =
            (u32_at(msg, 24), u32_at(msg, 28), u32_at(msg, 32));
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
        let packed = &msg[HEADER_LEN..];
        if packed.len() < need {
            return Err(WireError::Truncated(need, packed.len()));
        }
        Ok(Self {
            userland: [u32_at(msg, 8), u32_at(msg, 12)],
            dev_major: u32_at(msg, 16),
            dev_minor: u32_at(msg, 20),
            page_total,
            page_offset,
            page_count,
            dev_count,
            pte_bits,
            packed: &packed[..need],
        })
    }

    /// The window's entries, in region order (least significant field first).
    pub(crate) fn values(&self) -> impl Iterator<Item = u32> + '_ {
        let bits = u32::from(self.pte_bits);
        let mask = u32::MAX >> (32 - bits);
        let fields = fields_per_word(self.pte_bits);
        self.packed
            .chunks_exact(4)
            .flat_map(move |w| {
                let word = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]);
                (0..fields).map(move |f| (word >> (f * bits)) & mask)
            })
            .take(self.page_count as usize)
    }

    /// `(region, path)` pairs of the window.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        // A bounded range: `zip` advances its first iterator once more after
        // the last value, and an open one (`page_offset..`) then stepped past
        // u32::MAX for a window ending at the last region of a table of
        // u32::MAX regions (an overflow panic, an oops). parse() checked
        // page_offset + page_count <= page_total, so the sum cannot saturate.
        let end = self.page_offset.saturating_add(self.page_count);
        (self.page_offset..end).zip(self.values())
    }
}

/// The request fields a reply echoes (all zero if the request was too short).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Echo {
    /// `userland[2]`.
    pub userland: [u32; 2],
    /// `dev_major`.
    pub dev_major: u32,
    /// `dev_minor`.
    pub dev_minor: u32,
}

impl Echo {
    /// Reads the echoed fields from whatever part of the header is present.
    pub(crate) fn of(msg: &[u8]) -> Self {
        Self {
            userland: [u32_at(msg, 8), u32_at(msg, 12)],
            dev_major: u32_at(msg, 16),
            dev_minor: u32_at(msg, 20),
        }
    }
}

/// A `struct IpcResponse` being built.
pub(crate) struct Response {
    bytes: [u8; RESPONSE_LEN],
    err_len: usize,
}

const STATUS_OFF: usize = 24;
const ERR_OFF: usize = 28;

impl Response {
    /// A success reply echoing `echo`.
    pub(crate) fn new(echo: Echo) -> Self {
        let mut r = Self {
            bytes: [0; RESPONSE_LEN],
            err_len: 0,
        };
        let words = [
            RESPONSE_LEN as u32,
            OPCODE_PAGE_TABLE_UPLOAD,
            echo.userland[0],
            echo.userland[1],
            echo.dev_major,
            echo.dev_minor,
        ];
        for (i, w) in words.iter().enumerate() {
            r.bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        r
    }

    /// Marks the reply failed with positive `errno` and the message `why`
    /// (truncated to 255 bytes, NUL-terminated).
    pub(crate) fn fail(&mut self, errno: u32, why: fmt::Arguments<'_>) {
        self.bytes[STATUS_OFF..ERR_OFF].copy_from_slice(&errno.to_ne_bytes());
        self.bytes[ERR_OFF..].fill(0);
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
        let room = (ERR_STR_LEN - 1).saturating_sub(self.err_len);
        let n = s.len().min(room);
        let at = ERR_OFF + self.err_len;
        self.bytes[at..at + n].copy_from_slice(&s.as_bytes()[..n]);
        self.err_len += n;
        Ok(())
    }
}
