// SPDX-License-Identifier: GPL-2.0

//! Reading a page table back: the DM_SWITCH dump encodes a table snapshot as
//! the upload windows (`struct IpcPgTable`) that recreate it, so that a dump
//! replayed as uploads restores the same placement, userland words and
//! allocated chunks.
//!
//! - A window never crosses a chunk boundary.
//! - An unallocated chunk is one header-only window with `page_count` 0 at
//!   the chunk's first region: the upload that frees a chunk.
//! - An allocated chunk is sent as full windows of its entries.
//! - Windows are packed at the table's `pte_bits` when 32 is a multiple of
//!   it, otherwise at the next power of two: chunk starts must be multiples
//!   of the fields per word for the windows to be valid uploads.
//! - Each window's `reserved` byte holds the table's own `pte_bits`: the
//!   width an upload must use to change the table in place (another width
//!   replaces the whole table). Uploads ignore `reserved`.
//!
//! Pure code, also compiled into the host tests.

use super::abi::{
    self, fields_per_word, pg, write_u32, PgTableHeader, CHUNK_PTE_COUNT, MAX_IPC_MSG_LEN,
    OPCODE_PAGE_TABLE_UPLOAD,
};
use super::ptbl::PageTable;

/// What [`Dump::next_window`] produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// A window of this many bytes was written at the start of the buffer.
    Window(usize),
    /// The buffer cannot hold the next window (not even its first word).
    NoRoom,
    /// Every window has been produced.
    Done,
}

/// A dump in progress over a snapshot of a table.
pub(crate) struct Dump {
    table: PageTable,
    header: PgTableHeader,
    /// The table's own `pte_bits`, sent in `reserved`.
    table_bits: u8,
    /// First region of the next window.
    next: u32,
}

/// The wire width windows of a table with entries of `pte_bits` bits use.
pub(crate) fn window_pte_bits(pte_bits: u8) -> u8 {
    if 32 % u32::from(pte_bits.max(1)) == 0 {
        pte_bits.max(1)
    } else {
        // pte_bits < 32 here (32 is a divisor of itself), so this is at most 32.
        (u32::from(pte_bits).next_power_of_two()) as u8
    }
}

impl Dump {
    /// A dump of `table` (a snapshot: it is not shared with writers) of device
    /// `dev_major:dev_minor` with `dev_count` paths.
    pub(crate) fn new(table: PageTable, dev_major: u32, dev_minor: u32, dev_count: u16) -> Self {
        let header = PgTableHeader {
            userland: table.userland(),
            dev_major,
            dev_minor,
            page_total: table.page_total(),
            page_offset: 0,
            page_count: 0,
            dev_count,
            pte_bits: window_pte_bits(table.pte_bits()),
        };
        Self {
            table_bits: table.pte_bits(),
            table,
            header,
            next: 0,
        }
    }

    /// The next window for a buffer of `room` bytes: its first region, its
    /// `page_count` and its length in bytes.
    fn plan(&self, room: usize) -> Result<(u32, u32, usize), Step> {
        let total = self.header.page_total;
        if self.next >= total {
            return Err(Step::Done);
        }
        let bits = self.header.pte_bits;
        let chunk = self.next / CHUNK_PTE_COUNT;
        // The chunk's last region + 1 (at most page_total).
        let chunk_end = chunk
            .checked_add(1)
            .and_then(|c| c.checked_mul(CHUNK_PTE_COUNT))
            .map_or(total, |e| e.min(total));
        let room = room.min(MAX_IPC_MSG_LEN);
        let count = if self.table.chunk_allocated(chunk) {
            let words = room.saturating_sub(pg::HDR_LEN) / 4;
            if words == 0 {
                return Err(Step::NoRoom);
            }
            // words <= MAX_WORDS_PER_MSG, so words * fpw fits in u32.
            (words as u32 * fields_per_word(bits)).min(chunk_end - self.next)
        } else if room < pg::HDR_LEN {
            return Err(Step::NoRoom);
        } else {
            // An unallocated chunk: the window that frees it (windows in an
            // unallocated chunk only ever start at its first region).
            0
        };
        let len = pg::HDR_LEN + 4 * abi::words_for(u64::from(count), bits) as usize;
        Ok((chunk_end, count, len))
    }

    /// The length of the next window in a buffer of `room` bytes (what
    /// [`Dump::next_window`] will write into a buffer of that length).
    pub(crate) fn next_len(&self, room: usize) -> Step {
        match self.plan(room) {
            Ok((_, _, len)) => Step::Window(len),
            Err(step) => step,
        }
    }

    /// Writes the next window into `out`, as large as `out` allows (within
    /// `MAX_IPC_MSG_LEN` and the current chunk), and moves past it.
    pub(crate) fn next_window(&mut self, out: &mut [u8]) -> Step {
        let (chunk_end, count, len) = match self.plan(out.len()) {
            Ok(p) => p,
            Err(step) => return step,
        };
        let bits = self.header.pte_bits;
        let fpw = fields_per_word(bits);
        let mut header = self.header;
        header.page_offset = self.next;
        header.page_count = count;
        let buf = &mut out[..len];
        buf.fill(0);
        write_u32(buf, pg::TOTAL_LEN, len as u32);
        write_u32(buf, pg::OPCODE, OPCODE_PAGE_TABLE_UPLOAD);
        header.write(buf);
        buf[pg::RESERVED] = self.table_bits;
        for i in 0..count {
            let path = self.table.lookup(u64::from(self.next + i)).unwrap_or(0);
            let word = pg::HDR_LEN + 4 * (i / fpw) as usize;
            let shift = (i % fpw) * u32::from(bits);
            let w = abi::read_u32(buf, word) | (path << shift);
            write_u32(buf, word, w);
        }
        self.next = if count == 0 {
            chunk_end
        } else {
            self.next + count
        };
        Step::Window(len)
    }
}
