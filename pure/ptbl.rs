// SPDX-License-Identifier: GPL-2.0

//! The switch page table: which path serves each region.
//!
//! Regions are grouped in chunks of [`CHUNK_ENTRIES`] entries (the RFC's chunk
//! size, part of the netlink ABI). A chunk is allocated when an entry in it is
//! first written and can be freed again; regions in a missing chunk, or past
//! the table, are *unmapped*. Each entry is stored in the fewest bits that hold
//! every path index (`ceil(log2 paths)`, at least 1: see [`Packing`]), as many
//! per 64-bit word as fit, like upstream's `switch`; a lookup is a multiply by a
//! reciprocal, a shift and a mask, never a divide.
//!
//! A published [`PageTable`] is never modified: an update builds a new table
//! beside it ([`PageTable::derive`]), sharing the chunks it does not touch and
//! copying the ones it does, and the caller publishes it through RCU. So a
//! reader always sees one consistent geometry, and a failed update (bad entry,
//! out of memory) leaves the live table exactly as it was.
//!
//! This file is also compiled into the host tests (`tests/host`) against
//! a small stand-in for the two `kernel` items it uses.

use super::abi;
use super::message::{Regions, SetError};
use super::wire::Request;
use kernel::alloc::{flags::GFP_KERNEL, AllocError, KVVec};
use kernel::sync::Arc;

/// log2 of the entries per chunk (the ABI's `CHUNK_PTE_SHIFT`).
pub(crate) const CHUNK_SHIFT: u32 = abi::CHUNK_PTE_SHIFT;
/// Entries per chunk (the ABI's `CHUNK_PTE_COUNT`).
pub(crate) const CHUNK_ENTRIES: u32 = abi::CHUNK_PTE_COUNT;
const CHUNK_MASK: u32 = CHUNK_ENTRIES - 1;

/// Why an update was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpdateError {
    /// Region `0` is not below the table's `page_total`.
    RegionOutOfRange(u32),
    /// Entry for region `.0` names path `.1`, which does not exist.
    NoSuchPath(u32, u32),
    /// Memory for the new table could not be allocated.
    NoMemory,
}

impl From<AllocError> for UpdateError {
    fn from(_: AllocError) -> Self {
        UpdateError::NoMemory
    }
}

/// One chunk of packed entries.
pub(crate) struct Chunk {
    words: KVVec<u64>,
}

/// How entries are packed into 64-bit words: `bits` bits each (1..=16),
/// `per_word = 64 / bits` of them per word, entry `k` of a chunk in word
/// `k / per_word` at bit `(k % per_word) * bits`. A word's top
/// `64 % bits` bits are unused, as in upstream's `switch`.
///
/// The quotient is computed without a divide: `k * reciprocal >> 32` with
/// `reciprocal = 2^32 / per_word + 1` (rounded up). That is exact for every
/// index `k` of a chunk: write `reciprocal = (2^32 + e) / per_word` with
/// `0 < e <= per_word`; then `k * reciprocal / 2^32 = k / per_word + k * e /
/// (per_word * 2^32)`, and the error term is below `k / 2^32 < 2^-19` (since
/// `k < 2^13`), smaller than the `1 / per_word >= 2^-6` gap between
/// `k / per_word` and the next integer, so the floor is unchanged. The host
/// tests check every `k` for every `per_word` that occurs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Packing {
    bits: u32,
    per_word: u32,
    reciprocal: u64,
    mask: u64,
}

impl Packing {
    /// The packing of a table over `dev_count` paths (`1..=65535`).
    pub(crate) fn for_paths(dev_count: u32) -> Self {
        // min_pte_bits is 1..=32; with at most 65535 paths it is at most 16,
        // and the clamp keeps per_word >= 4 for any other input.
        let bits = u32::from(min_pte_bits(dev_count)).min(16);
        let per_word = u64::BITS / bits;
        Self {
            bits,
            per_word,
            reciprocal: (1u64 << 32) / u64::from(per_word) + 1,
            mask: (1u64 << bits) - 1,
        }
    }

    /// 64-bit words in a chunk.
    pub(crate) fn chunk_words(&self) -> usize {
        CHUNK_ENTRIES.div_ceil(self.per_word) as usize
    }

    /// Word index and bit shift of entry `local` (`< CHUNK_ENTRIES`) of a chunk.
    #[inline(always)]
    pub(crate) fn locate(&self, local: u32) -> (usize, u32) {
        // local < 2^13 and reciprocal <= 2^32 + 1: the product fits in 46
        // bits, the quotient times per_word is at most local, and the
        // remainder times bits is below 64. Wrapping forms of these exact
        // operations keep overflow-check branches out of map().
        let word = (u64::from(local).wrapping_mul(self.reciprocal) >> 32) as u32;
        let field = local.wrapping_sub(word.wrapping_mul(self.per_word));
        (word as usize, field.wrapping_mul(self.bits))
    }
}

/// A complete, immutable-once-published page table.
pub(crate) struct PageTable {
    packing: Packing,
    dev_count: u32,
    page_total: u32,
    pte_bits: u8,
    userland: [u32; 2],
    chunks: KVVec<Option<Arc<Chunk>>>,
}

/// Bits a path index needs for `dev_count` paths (at least 1).
pub(crate) fn min_pte_bits(dev_count: u32) -> u8 {
    let bits = u32::BITS - dev_count.saturating_sub(1).leading_zeros();
    // At most 32, so the cast is lossless.
    bits.max(1) as u8
}

/// Number of chunks covering `page_total` regions.
pub(crate) fn chunk_count(page_total: u32) -> u32 {
    page_total.div_ceil(CHUNK_ENTRIES)
}

impl PageTable {
    /// A table over `dev_count` paths (`1..=65535`) with the given chunks.
    fn with_chunks(
        dev_count: u32,
        page_total: u32,
        pte_bits: u8,
        chunks: KVVec<Option<Arc<Chunk>>>,
    ) -> Self {
        Self {
            packing: Packing::for_paths(dev_count),
            dev_count,
            page_total,
            pte_bits,
            userland: [0; 2],
            chunks,
        }
    }

    /// An empty table (every chunk unallocated) of `page_total` regions over
    /// `dev_count` paths (`1..=65535`), for windows of `pte_bits` bits.
    pub(crate) fn empty(dev_count: u32, page_total: u32, pte_bits: u8) -> Result<Self, AllocError> {
        let chunks = KVVec::from_elem(None, chunk_count(page_total) as usize, GFP_KERNEL)?;
        Ok(Self::with_chunks(dev_count, page_total, pte_bits, chunks))
    }

    /// The table upstream's `switch` starts with: region `r` on path `r mod dev_count`.
    pub(crate) fn round_robin(dev_count: u32, page_total: u32) -> Result<Self, UpdateError> {
        let mut table = Self::empty(dev_count, page_total, min_pte_bits(dev_count))?;
        let mut path = 0;
        table.set_entries((0..page_total).map(|region| {
            let entry = (region, path);
            path = if path + 1 == dev_count { 0 } else { path + 1 };
            entry
        }))?;
        Ok(table)
    }

    /// A new table to update `current` with: it shares `current`'s chunks and
    /// userland words when the geometry (`page_total`, `pte_bits`) is the
    /// same, and is empty otherwise.
    pub(crate) fn derive(
        current: Option<&Self>,
        dev_count: u32,
        page_total: u32,
        pte_bits: u8,
    ) -> Result<Self, AllocError> {
        match current {
            Some(cur)
                if cur.dev_count == dev_count
                    && cur.page_total == page_total
                    && cur.pte_bits == pte_bits =>
            {
                let mut chunks = KVVec::with_capacity(cur.chunks.len(), GFP_KERNEL)?;
                chunks.extend_from_slice(&cur.chunks, GFP_KERNEL)?;
                let mut table = Self::with_chunks(dev_count, page_total, pte_bits, chunks);
                table.userland = cur.userland;
                Ok(table)
            }
            _ => Self::empty(dev_count, page_total, pte_bits),
        }
    }

    /// `old` (a table of the same paths) resized to `page_total` regions, for
    /// a device that grew or shrank online: regions below both sizes keep
    /// their entries (the chunks are shared), and the regions it gained take
    /// `base`'s entries (the new target's initial table, e.g. round robin),
    /// or without `base` are unmapped in new chunks and path 0 in the chunk
    /// `old` ends in (as any unwritten entry of an allocated chunk). A chunk
    /// `old` had freed stays unallocated. `old`'s `pte_bits` and userland
    /// words are kept.
    pub(crate) fn resized(
        old: &Self,
        page_total: u32,
        base: Option<&Self>,
    ) -> Result<Self, UpdateError> {
        let count = chunk_count(page_total) as usize;
        let mut chunks = KVVec::with_capacity(count, GFP_KERNEL)?;
        for i in 0..count {
            let chunk = match old.chunks.get(i) {
                Some(chunk) => chunk.clone(),
                None => base.and_then(|b| b.chunks.get(i)).cloned().flatten(),
            };
            chunks.push(chunk, GFP_KERNEL)?;
        }
        let mut table = Self::with_chunks(old.dev_count, page_total, old.pte_bits, chunks);
        table.userland = old.userland;
        // The chunk `old` ends in may hold stale entries past its end (from
        // an earlier shrink): the regions gained there are written anew.
        let first = old.page_total;
        if first < page_total
            && first & CHUNK_MASK != 0
            && old.chunk_allocated(first >> CHUNK_SHIFT)
        {
            let last = (first | CHUNK_MASK).min(page_total - 1);
            table.set_entries((first..=last).map(|region| {
                let path = base.and_then(|b| b.lookup(u64::from(region)));
                (region, path.unwrap_or(0))
            }))?;
        }
        Ok(table)
    }

    /// The table upload window `request` makes of `current` (the live table
    /// of a target with `dev_count` paths): a copy sharing what the window
    /// leaves alone, with the window's entries written (or its chunk freed,
    /// for `page_count` 0) and its userland words. `current` is untouched.
    pub(crate) fn uploaded(
        current: Option<&Self>,
        dev_count: u32,
        request: &Request<'_>,
    ) -> Result<Self, UpdateError> {
        let h = &request.header;
        let mut table = Self::derive(current, dev_count, h.page_total, h.pte_bits)?;
        if h.page_count == 0 {
            table.free_chunk(h.page_offset >> CHUNK_SHIFT);
        } else {
            table.set_entries(request.entries())?;
        }
        table.set_userland(h.userland);
        Ok(table)
    }

    /// The path of `region`, or `None` if it is unmapped.
    #[inline(always)]
    pub(crate) fn lookup(&self, region: u64) -> Option<u32> {
        if region >= u64::from(self.page_total) {
            return None;
        }
        // Below page_total, so it fits in u32.
        let region = region as u32;
        let chunk = self
            .chunks
            .get((region >> CHUNK_SHIFT) as usize)?
            .as_deref()?;
        let (word, shift) = self.packing.locate(region & CHUNK_MASK);
        Some((chunk.words.get(word)?.wrapping_shr(shift) & self.packing.mask) as u32)
    }

    /// Writes `(region, path)` entries (see [`Editor::set`]).
    pub(crate) fn set_entries(
        &mut self,
        entries: impl IntoIterator<Item = (u32, u32)>,
    ) -> Result<(), UpdateError> {
        let mut editor = self.edit();
        for (region, path) in entries {
            editor.set(region, path)?;
        }
        editor.finish()
    }

    /// Starts editing entries in place of this (unpublished) table.
    pub(crate) fn edit(&mut self) -> Editor<'_> {
        Editor {
            table: self,
            open: None,
        }
    }

    /// A private copy of chunk `index` (zeroed if unallocated).
    fn chunk_copy(&self, index: u32) -> Result<KVVec<u64>, AllocError> {
        let len = self.packing.chunk_words();
        match self.chunks.get(index as usize).and_then(Option::as_deref) {
            Some(chunk) => {
                let mut words = KVVec::with_capacity(len, GFP_KERNEL)?;
                words.extend_from_slice(&chunk.words, GFP_KERNEL)?;
                Ok(words)
            }
            None => KVVec::from_elem(0, len, GFP_KERNEL),
        }
    }

    /// Publishes `words` as chunk `index` of this (unpublished) table.
    fn store_chunk(&mut self, index: u32, words: KVVec<u64>) -> Result<(), AllocError> {
        let chunk = Arc::new(Chunk { words }, GFP_KERNEL)?;
        if let Some(slot) = self.chunks.get_mut(index as usize) {
            *slot = Some(chunk);
        }
        Ok(())
    }

    /// Whether chunk `index` holds entries (its regions are mapped).
    pub(crate) fn chunk_allocated(&self, index: u32) -> bool {
        matches!(self.chunks.get(index as usize), Some(Some(_)))
    }

    /// Frees chunk `index`: its regions become unmapped. Out of range is a no-op.
    pub(crate) fn free_chunk(&mut self, index: u32) {
        if let Some(slot) = self.chunks.get_mut(index as usize) {
            *slot = None;
        }
    }

    /// Sets the two opaque userland words shown in status.
    pub(crate) fn set_userland(&mut self, userland: [u32; 2]) {
        self.userland = userland;
    }

    /// The two opaque userland words.
    pub(crate) fn userland(&self) -> [u32; 2] {
        self.userland
    }

    /// Regions covered by the table.
    pub(crate) fn page_total(&self) -> u32 {
        self.page_total
    }

    /// Wire entry width the table was built for.
    pub(crate) fn pte_bits(&self) -> u8 {
        self.pte_bits
    }
}

/// Writes entries into an unpublished [`PageTable`]: each chunk it touches is
/// copied (or allocated, zeroed: path 0) once and kept open while consecutive
/// writes land in it, so tables already published never change.
///
/// Call [`Editor::finish`] to store the last open chunk; an editor dropped
/// without it (after an error) leaves the table partly updated, which is fine
/// because such a table is discarded, never published.
pub(crate) struct Editor<'t> {
    table: &'t mut PageTable,
    open: Option<(u32, KVVec<u64>)>,
}

impl Editor<'_> {
    /// Maps `region` to `path`.
    pub(crate) fn set(&mut self, region: u32, path: u32) -> Result<(), UpdateError> {
        let table = &mut *self.table;
        if region >= table.page_total {
            return Err(UpdateError::RegionOutOfRange(region));
        }
        if path >= table.dev_count {
            return Err(UpdateError::NoSuchPath(region, path));
        }
        let index = region >> CHUNK_SHIFT;
        let words = match &mut self.open {
            Some((i, words)) if *i == index => words,
            open => {
                if let Some((i, words)) = open.take() {
                    table.store_chunk(i, words)?;
                }
                &mut open.insert((index, table.chunk_copy(index)?)).1
            }
        };
        let packing = table.packing;
        let (word, shift) = packing.locate(region & CHUNK_MASK);
        if let Some(w) = words.get_mut(word) {
            *w = (*w & !(packing.mask << shift)) | (u64::from(path) << shift);
        }
        Ok(())
    }

    /// The path `region` maps to in the table being edited (`None`: unmapped).
    pub(crate) fn get(&self, region: u32) -> Option<u32> {
        match &self.open {
            Some((i, words)) if *i == region >> CHUNK_SHIFT && region < self.table.page_total => {
                let packing = self.table.packing;
                let (word, shift) = packing.locate(region & CHUNK_MASK);
                Some(((*words.get(word)? >> shift) & packing.mask) as u32)
            }
            _ => self.table.lookup(u64::from(region)),
        }
    }

    /// Stores the open chunk; the table is then complete.
    pub(crate) fn finish(mut self) -> Result<(), UpdateError> {
        if let Some((i, words)) = self.open.take() {
            self.table.store_chunk(i, words)?;
        }
        Ok(())
    }
}

/// `set_region_mappings` messages edit the table through its editor.
impl Regions for Editor<'_> {
    fn page_total(&self) -> u32 {
        self.table.page_total
    }

    fn path(&self, region: u32) -> u32 {
        self.get(region).unwrap_or(0)
    }

    fn set(&mut self, region: u32, path: u32) -> Result<(), SetError> {
        Editor::set(self, region, path).map_err(|e| match e {
            UpdateError::RegionOutOfRange(_) => SetError::RegionOutOfRange,
            UpdateError::NoSuchPath(..) => SetError::NoSuchPath,
            UpdateError::NoMemory => SetError::NoMemory,
        })
    }
}
