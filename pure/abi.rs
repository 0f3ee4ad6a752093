// SPDX-License-Identifier: GPL-2.0

//! The DM_SWITCH generic-netlink ABI, defined once for the kernel and the
//! agent: family name and version, command and attribute numbers, the byte
//! layout of `struct IpcPgTable` (request) and `struct IpcResponse` (reply),
//! the chunk size, how entries are packed into words, the size limits, and
//! the per-path statistics record (`struct dm_switch_path_stats`).
//!
//! The contract is `include/uapi/dm-switch.h` (the 2011 RFC's format,
//! unchanged); a host test compiles a C program against that header and
//! checks every number here. Integers are in host byte order. The kernel
//! module compiles this file as `pure::abi`, the agent (`tools/agent`) as
//! `dm_switch::wire::abi` through `#[path]`: neither declares the format
//! again. Items are `pub` because they are the agent's public API.

/// Generic-netlink family name (`DM_SWITCH_GENL_NAME`).
pub const FAMILY_NAME: &str = "DM_SWITCH";
/// Generic-netlink family version (`DM_SWITCH_GENL_VERSION`).
pub const FAMILY_VERSION: u8 = 1;
/// `NETLINK_CMD_GET_PAGE_TBL`: the upload command (the RFC's).
pub const CMD_GET_PAGE_TBL: u8 = 1;
/// `NETLINK_CMD_DUMP_PAGE_TBL`: the read-back command, a netlink dump whose
/// messages each carry one `IpcPgTable` window in `NETLINK_ATTR_MSG`.
pub const CMD_DUMP_PAGE_TBL: u8 = 2;
/// `DM_SWITCH_CMD_DUMP_PATH_STATS`: reads each path's I/O counters, a
/// netlink dump whose messages each carry `DM_SWITCH_ATTR_PATH_STATS`.
pub const CMD_DUMP_PATH_STATS: u8 = 3;
/// `NETLINK_ATTR_MSG`: the attribute holding an `IpcPgTable` (upload
/// requests and dump replies).
pub const ATTR_MSG: u16 = 1;
/// `DM_SWITCH_ATTR_DEV_MAJOR` (u32): the device a dump reads.
pub const ATTR_DEV_MAJOR: u16 = 2;
/// `DM_SWITCH_ATTR_DEV_MINOR` (u32): the device a dump reads.
pub const ATTR_DEV_MINOR: u16 = 3;
/// `DM_SWITCH_ATTR_PATH_STATS`: consecutive `struct dm_switch_path_stats`
/// records ([`path_stats`]), in path order.
pub const ATTR_PATH_STATS: u16 = 4;
/// `DM_SWITCH_ATTR_RESPONSE`: the reply attribute holding an `IpcResponse`
/// (the RFC used the policy constant `NLA_BINARY`, 11).
pub const ATTR_RESPONSE: u16 = 11;
/// `OPCODE_PAGE_TABLE_UPLOAD`: the only opcode.
pub const OPCODE_PAGE_TABLE_UPLOAD: u32 = 1;

/// `CHUNK_PTE_SHIFT`: log2 of the entries per chunk.
pub const CHUNK_PTE_SHIFT: u32 = 13;
/// `CHUNK_PTE_COUNT`: entries per chunk, the unit of allocation and of
/// `page_count = 0` frees.
pub const CHUNK_PTE_COUNT: u32 = 1 << CHUNK_PTE_SHIFT;
/// `MAX_IPC_MSG_LEN`: largest `NETLINK_ATTR_MSG` payload in bytes.
pub const MAX_IPC_MSG_LEN: usize = 65480;
/// `MAX_ERR_STR_LEN`: longest `err_str`, without its NUL.
pub const MAX_ERR_STR_LEN: usize = 255;

/// Byte offsets in `struct IpcPgTable` (the request).
pub mod pg {
    /// `total_len` (u32, informational).
    pub const TOTAL_LEN: usize = 0;
    /// `opcode` (u32).
    pub const OPCODE: usize = 4;
    /// `userland[0]` (u32); `userland[1]` follows at +4.
    pub const USERLAND: usize = 8;
    /// `dev_major` (u32).
    pub const DEV_MAJOR: usize = 16;
    /// `dev_minor` (u32).
    pub const DEV_MINOR: usize = 20;
    /// `page_total` (u32).
    pub const PAGE_TOTAL: usize = 24;
    /// `page_offset` (u32).
    pub const PAGE_OFFSET: usize = 28;
    /// `page_count` (u32).
    pub const PAGE_COUNT: usize = 32;
    /// `dev_count` (u16).
    pub const DEV_COUNT: usize = 36;
    /// `pte_bits` (u8).
    pub const PTE_BITS: usize = 38;
    /// `reserved` (u8): ignored in uploads; in dump replies, the `pte_bits`
    /// the table was uploaded with (the width that changes it in place).
    pub const RESERVED: usize = 39;
    /// `ptbl_buff` (u32 words, variable length).
    pub const PTBL_BUFF: usize = 40;
    /// Bytes before `ptbl_buff` (`IPC_PG_TABLE_HDR_LEN`).
    pub const HDR_LEN: usize = PTBL_BUFF;
}

/// Byte offsets in `struct IpcResponse` (the reply).
pub mod resp {
    /// `total_len` (u32): always [`LEN`].
    pub const TOTAL_LEN: usize = 0;
    /// `opcode` (u32).
    pub const OPCODE: usize = 4;
    /// `userland[0]` (u32); `userland[1]` follows at +4.
    pub const USERLAND: usize = 8;
    /// `dev_major` (u32).
    pub const DEV_MAJOR: usize = 16;
    /// `dev_minor` (u32).
    pub const DEV_MINOR: usize = 20;
    /// `status` (u32): 0 or a positive errno.
    pub const STATUS: usize = 24;
    /// `err_str` (`char[MAX_ERR_STR_LEN + 1]`, NUL-terminated).
    pub const ERR_STR: usize = 28;
    /// Size of `err_str`, NUL included.
    pub const ERR_STR_SIZE: usize = super::MAX_ERR_STR_LEN + 1;
    /// `sizeof(struct IpcResponse)`.
    pub const LEN: usize = ERR_STR + ERR_STR_SIZE;
}

/// Byte offsets in `struct dm_switch_path_stats`: the I/O a switch target
/// sent to one path since its table was loaded, as the block layer's stat
/// groups count it (`/proc/diskstats`): index 0 read, 1 write (write-zeroes
/// included), 2 discard, 3 flush (empty flush clones: no sectors).
pub mod path_stats {
    /// `path` (u32): the path's index in the table line.
    pub const PATH: usize = 0;
    /// `reserved` (u32): 0.
    pub const RESERVED: usize = 4;
    /// `ios[4]` (u64 each): bios sent, by stat group.
    pub const IOS: usize = 8;
    /// `sectors[4]` (u64 each): 512-byte sectors sent, by stat group.
    pub const SECTORS: usize = 40;
    /// Stat groups.
    pub const GROUPS: usize = 4;
    /// `sizeof(struct dm_switch_path_stats)`.
    pub const LEN: usize = SECTORS + 8 * GROUPS;
}

/// One path's counters, as a `struct dm_switch_path_stats` carries them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathStats {
    /// The path's index.
    pub path: u32,
    /// Bios by stat group (read, write, discard, flush).
    pub ios: [u64; path_stats::GROUPS],
    /// Sectors by stat group.
    pub sectors: [u64; path_stats::GROUPS],
}

impl PathStats {
    /// Writes the record into `buf` (at least [`path_stats::LEN`] bytes;
    /// bytes past its end are dropped).
    pub fn write(&self, buf: &mut [u8]) {
        write_u32(buf, path_stats::PATH, self.path);
        write_u32(buf, path_stats::RESERVED, 0);
        for g in 0..path_stats::GROUPS {
            write_u64(buf, path_stats::IOS + 8 * g, self.ios[g]);
            write_u64(buf, path_stats::SECTORS + 8 * g, self.sectors[g]);
        }
    }

    /// Reads the record at the start of `buf`; `None` if `buf` is shorter
    /// than [`path_stats::LEN`].
    pub fn read(buf: &[u8]) -> Option<Self> {
        if buf.len() < path_stats::LEN {
            return None;
        }
        let mut s = Self {
            path: read_u32(buf, path_stats::PATH),
            ..Self::default()
        };
        for g in 0..path_stats::GROUPS {
            s.ios[g] = read_u64(buf, path_stats::IOS + 8 * g);
            s.sectors[g] = read_u64(buf, path_stats::SECTORS + 8 * g);
        }
        Some(s)
    }
}

/// The fields of a request before its entries (`struct IpcPgTable` without
/// `total_len`, `opcode`, `reserved` and `ptbl_buff`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PgTableHeader {
    /// Opaque words the kernel shows in `dmsetup status`.
    pub userland: [u32; 2],
    /// Major number of the DM device.
    pub dev_major: u32,
    /// Minor number of the DM device.
    pub dev_minor: u32,
    /// Regions in the whole table.
    pub page_total: u32,
    /// First region of this window (a multiple of the fields per word).
    pub page_offset: u32,
    /// Regions in this window (0 with a chunk-aligned offset frees a chunk).
    pub page_count: u32,
    /// Number of paths of the target.
    pub dev_count: u16,
    /// Bits per entry, 1..=32.
    pub pte_bits: u8,
}

impl PgTableHeader {
    /// Reads the header fields of request `buf`; fields past the end of a
    /// short buffer read as 0. Checks nothing.
    pub fn read(buf: &[u8]) -> Self {
        Self {
            userland: [read_u32(buf, pg::USERLAND), read_u32(buf, pg::USERLAND + 4)],
            dev_major: read_u32(buf, pg::DEV_MAJOR),
            dev_minor: read_u32(buf, pg::DEV_MINOR),
            page_total: read_u32(buf, pg::PAGE_TOTAL),
            page_offset: read_u32(buf, pg::PAGE_OFFSET),
            page_count: read_u32(buf, pg::PAGE_COUNT),
            dev_count: read_u16(buf, pg::DEV_COUNT),
            pte_bits: byte(buf, pg::PTE_BITS, 0),
        }
    }

    /// Writes the header fields into request `buf` (at least
    /// [`pg::HDR_LEN`] bytes; `total_len` and `opcode` are the caller's).
    pub fn write(&self, buf: &mut [u8]) {
        write_u32(buf, pg::USERLAND, self.userland[0]);
        write_u32(buf, pg::USERLAND + 4, self.userland[1]);
        write_u32(buf, pg::DEV_MAJOR, self.dev_major);
        write_u32(buf, pg::DEV_MINOR, self.dev_minor);
        write_u32(buf, pg::PAGE_TOTAL, self.page_total);
        write_u32(buf, pg::PAGE_OFFSET, self.page_offset);
        write_u32(buf, pg::PAGE_COUNT, self.page_count);
        for (i, b) in self.dev_count.to_ne_bytes().into_iter().enumerate() {
            if let Some(at) = buf.get_mut(pg::DEV_COUNT + i) {
                *at = b;
            }
        }
        if let Some(at) = buf.get_mut(pg::PTE_BITS) {
            *at = self.pte_bits;
        }
    }
}

/// Most packed words one request can carry: `(65480 - 40) / 4` = 16360.
pub const MAX_WORDS_PER_MSG: usize = (MAX_IPC_MSG_LEN - pg::HDR_LEN) / 4;

/// Entries of `pte_bits` bits in one u32 word: fields never straddle two
/// words, the least significant field comes first. `pte_bits` is 1..=32 on
/// the wire; 0 is treated as 1.
pub const fn fields_per_word(pte_bits: u8) -> u32 {
    32 / if pte_bits == 0 { 1 } else { pte_bits as u32 }
}

/// Mask of one field of `pte_bits` (1..=32) bits.
pub const fn field_mask(pte_bits: u8) -> u32 {
    if pte_bits >= 32 {
        u32::MAX
    } else {
        (1u32 << pte_bits) - 1
    }
}

/// Words needed for `count` entries of `pte_bits` bits.
pub const fn words_for(count: u64, pte_bits: u8) -> u64 {
    count.div_ceil(fields_per_word(pte_bits) as u64)
}

/// Byte `off` of `buf`, 0 past its end.
fn byte(buf: &[u8], off: usize, i: usize) -> u8 {
    off.checked_add(i)
        .and_then(|at| buf.get(at))
        .copied()
        .unwrap_or(0)
}

/// The `N` bytes at `off`, or zeros unless all of them are inside `buf`: a
/// field a short buffer holds only part of reads as 0, as if absent.
fn field<const N: usize>(buf: &[u8], off: usize) -> [u8; N] {
    off.checked_add(N)
        .and_then(|end| buf.get(off..end))
        .and_then(|b| b.try_into().ok())
        .unwrap_or([0; N])
}

/// The u32 at byte `off` of `buf`; 0 unless all four bytes are inside
/// `buf`, so a short buffer can never be misread or panic.
pub fn read_u32(buf: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(field(buf, off))
}

/// The u64 at byte `off` of `buf` (0 unless all eight bytes are inside `buf`).
pub fn read_u64(buf: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(field(buf, off))
}

/// The u16 at byte `off` of `buf` (0 unless both bytes are inside `buf`).
pub fn read_u16(buf: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes(field(buf, off))
}

/// Writes `bytes` at byte `off` of `buf`; bytes past its end are dropped.
fn write_bytes(buf: &mut [u8], off: usize, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        if let Some(at) = off.checked_add(i).and_then(|at| buf.get_mut(at)) {
            *at = b;
        }
    }
}

/// Writes `v` at byte `off` of `buf`; bytes past the end of `buf` are
/// dropped.
pub fn write_u32(buf: &mut [u8], off: usize, v: u32) {
    write_bytes(buf, off, &v.to_ne_bytes());
}

/// Writes `v` at byte `off` of `buf`; bytes past the end of `buf` are
/// dropped.
pub fn write_u64(buf: &mut [u8], off: usize, v: u64) {
    write_bytes(buf, off, &v.to_ne_bytes());
}
