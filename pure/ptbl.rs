// SPDX-License-Identifier: GPL-2.0

//! The switch page table: which path serves each region.
//!
//! Regions are grouped in chunks of [`CHUNK_ENTRIES`] entries (the RFC's chunk
//! size, part of the netlink ABI). A chunk is allocated when an entry in it is
//! first written and can be freed again; regions in a missing chunk, or past
//! the table, are *unmapped*. Each entry is stored in the fewest bits that hold
//! every path index (`ceil(log2 paths)`, at least 1: see [`Packing`]), as many
//! per 64-bit word as fit, like upstream's `switch`; a lookup is shifts and a
//! mask (a multiply by a reciprocal for widths that are not a power of two),
//! never a divide. The words are laid out chunk after chunk and stored in
//! 4 KiB blocks (kmalloc's 4 KiB bucket, with nothing lost to rounding), so
//! memory follows the packed size at every width; the blocks of unallocated
//! chunks share one block of zeroes, so no block is ever missing. A bitmap
//! says which chunks are allocated. A table whose chunks are all allocated
//! (the usual case: the agent uploads every region) is looked up without
//! that bitmap.
//!
//! A published [`PageTable`] is never modified: an update builds a new table
//! beside it ([`PageTable::derive`]), sharing the blocks it does not touch and
//! copying the ones it does, and the caller publishes it through RCU. So a
//! reader always sees one consistent geometry, and a failed update (bad entry,
//! out of memory) leaves the live table exactly as it was.
//!
//! This file is also compiled into the host tests (`tests/host`) against
//! a small stand-in for the two `kernel` items it uses.

use super::abi;
use super::message::{Regions, SetError};
use super::wire::Request;
use kernel::alloc::{flags::GFP_KERNEL, AllocError, KBox, KVVec};
use kernel::init::{zeroed, InPlaceInit};
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

/// log2 of the words per storage block.
const BLOCK_SHIFT: u32 = 9;
/// Words per storage block: 4 KiB, exactly one of kmalloc's buckets.
const BLOCK_WORDS: usize = 1 << BLOCK_SHIFT;
const BLOCK_MASK: usize = BLOCK_WORDS - 1;

/// The words of one block: a fixed-size array, so that indexing it with a
/// masked index needs no bounds check.
type Words = [u64; BLOCK_WORDS];

/// One block of a table's words, shared by the tables that have not
/// changed it.
struct Block {
    words: KBox<Words>,
}

/// A zeroed block of words (written in place: 4 KiB never crosses the stack).
fn zeroed_words() -> Result<KBox<Words>, AllocError> {
    KBox::init(zeroed(), GFP_KERNEL).map_err(|_| AllocError)
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
///
/// Where `bits` is a power of two (1, 2, 4, 8, 16), words are full, chunks
/// have no padding, and entry `r` of the table is simply in word
/// `r >> log2(per_word)` at bit `(r * bits) % 64`: a shift, a multiply and a
/// mask, as in upstream's `switch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Packing {
    bits: u32,
    per_word: u32,
    reciprocal: u64,
    mask: u64,
    /// Words per chunk: `ceil(CHUNK_ENTRIES / per_word)`.
    chunk_words: u32,
    /// `log2 per_word` when `bits` is a power of two.
    full_words: Option<u32>,
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
            chunk_words: CHUNK_ENTRIES.div_ceil(per_word),
            full_words: bits.is_power_of_two().then(|| per_word.trailing_zeros()),
        }
    }

    /// 64-bit words in a chunk.
    pub(crate) fn chunk_words(&self) -> usize {
        self.chunk_words as usize
    }

    /// Index of chunk `chunk`'s first word in the table.
    #[inline(always)]
    fn chunk_start(&self, chunk: u32) -> usize {
        // chunk < 2^19 and chunk_words <= 2^11: the product is below 2^30.
        (chunk as usize).wrapping_mul(self.chunk_words as usize)
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

    /// The entry at bit `shift` (from [`Self::locate`]) of `word`.
    #[inline(always)]
    fn field(&self, word: u64, shift: u32) -> u32 {
        (word.wrapping_shr(shift) & self.mask) as u32
    }
}

/// A complete, immutable-once-published page table.
///
/// Its words are laid out chunk after chunk (chunk `c` at word
/// `c * chunk_words`, packed as [`Packing`] says) and stored in 4 KiB blocks,
/// so the memory spent is the packed size rounded up to a block, plus a
/// small header per block, whatever the entry width. An update copies only
/// the blocks it writes.
pub(crate) struct PageTable {
    packing: Packing,
    dev_count: u32,
    page_total: u32,
    pte_bits: u8,
    userland: [u32; 2],
    /// `page_total` when every chunk is allocated, else 0: regions below it
    /// are looked up without the `allocated` bitmap. Only freeing a chunk
    /// makes a complete table incomplete; [`Editor::finish`] notices when
    /// writes complete one.
    complete_below: u32,
    /// Bit `c % 64` of word `c / 64`: chunk `c` is allocated (its regions
    /// are mapped). Bits past the last chunk are 0.
    allocated: KVVec<u64>,
    /// The words, [`BLOCK_WORDS`] per block. Every block holding a word of
    /// an allocated chunk is its own; one holding only words of unallocated
    /// chunks may be `zero` (or hold stale words: a chunk's words are zeroed
    /// when it is allocated). No block is ever missing, so a lookup has no
    /// null check.
    blocks: KVVec<Arc<Block>>,
    /// A block of zeroes, shared by the table and the tables derived from
    /// it: the blocks of unallocated chunks (4 KiB for the whole lineage).
    zero: Arc<Block>,
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

/// Storage blocks for `chunks` chunks of `chunk_words` words.
fn block_count(chunks: u32, chunk_words: usize) -> usize {
    (chunks as usize * chunk_words).div_ceil(BLOCK_WORDS)
}

impl PageTable {
    /// An empty table (every chunk unallocated) of `page_total` regions over
    /// `dev_count` paths (`1..=65535`), for windows of `pte_bits` bits.
    pub(crate) fn empty(dev_count: u32, page_total: u32, pte_bits: u8) -> Result<Self, AllocError> {
        let packing = Packing::for_paths(dev_count);
        let chunks = chunk_count(page_total);
        let zero = Arc::new(
            Block {
                words: zeroed_words()?,
            },
            GFP_KERNEL,
        )?;
        let blocks = block_count(chunks, packing.chunk_words());
        Ok(Self {
            packing,
            dev_count,
            page_total,
            pte_bits,
            userland: [0; 2],
            complete_below: 0,
            allocated: KVVec::from_elem(0, chunks.div_ceil(64) as usize, GFP_KERNEL)?,
            blocks: KVVec::from_elem(zero.clone(), blocks, GFP_KERNEL)?,
            zero,
        })
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

    /// A new table to update `current` with: it shares `current`'s blocks and
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
                let mut allocated = KVVec::with_capacity(cur.allocated.len(), GFP_KERNEL)?;
                allocated.extend_from_slice(&cur.allocated, GFP_KERNEL)?;
                let mut blocks = KVVec::with_capacity(cur.blocks.len(), GFP_KERNEL)?;
                blocks.extend_from_slice(&cur.blocks, GFP_KERNEL)?;
                Ok(Self {
                    allocated,
                    blocks,
                    zero: cur.zero.clone(),
                    ..*cur
                })
            }
            _ => Self::empty(dev_count, page_total, pte_bits),
        }
    }

    /// `old` (a table of the same paths) resized to `page_total` regions, for
    /// a device that grew or shrank online: regions below both sizes keep
    /// their entries (the blocks are shared), and the regions it gained take
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
        let mut table = Self::empty(old.dev_count, page_total, old.pte_bits)?;
        table.userland = old.userland;
        let kept = chunk_count(page_total).min(chunk_count(old.page_total));
        for chunk in (0..kept).filter(|&c| old.chunk_allocated(c)) {
            table.mark(chunk, true);
        }
        let shared = block_count(kept, table.packing.chunk_words());
        for (new, block) in table.blocks.iter_mut().zip(old.blocks.iter()).take(shared) {
            // `old`'s zero block stays `table`'s own zero block.
            if !Arc::ptr_eq(block, &old.zero) {
                new.clone_from(block);
            }
        }
        let mut editor = table.edit();
        for region in old.page_total..page_total {
            let chunk = region >> CHUNK_SHIFT;
            let from_base = base.and_then(|b| b.lookup(u64::from(region)));
            let path = if chunk >= kept {
                from_base
            } else if old.chunk_allocated(chunk) {
                // The chunk `old` ends in may hold stale words past its end
                // (from an earlier shrink): its regions gained are written anew.
                Some(from_base.unwrap_or(0))
            } else {
                None
            };
            if let Some(path) = path {
                editor.set(region, path)?;
            }
        }
        editor.finish()?;
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

    /// Word index (in the table) and bit shift of `region`'s entry.
    #[inline(always)]
    fn position(&self, region: u32) -> (usize, u32) {
        if let Some(word_shift) = self.packing.full_words {
            // word_shift <= 6; region * bits modulo 64 is the bit offset in
            // the word (wrapping is that modulo, as 64 divides 2^32).
            return (
                region.wrapping_shr(word_shift) as usize,
                region.wrapping_mul(self.packing.bits) & (u64::BITS - 1),
            );
        }
        let (word, shift) = self.packing.locate(region & CHUNK_MASK);
        // Both below 2^30 (see chunk_start): no overflow.
        (
            self.packing
                .chunk_start(region >> CHUNK_SHIFT)
                .wrapping_add(word),
            shift,
        )
    }

    /// The path of `region`, or `None` if it is unmapped.
    #[inline(always)]
    pub(crate) fn lookup(&self, region: u64) -> Option<u32> {
        self.lookup_complete(region)
            .or_else(|| self.lookup_incomplete(region))
    }

    /// [`Self::lookup`] in a complete table (every chunk allocated), with no
    /// call: `None` if the table is not complete or `region` is past it.
    #[inline(always)]
    pub(crate) fn lookup_complete(&self, region: u64) -> Option<u32> {
        // Below page_total, so it fits in u32; every chunk is allocated.
        if region < u64::from(self.complete_below) {
            self.entry(region as u32)
        } else {
            None
        }
    }

    /// [`Self::lookup`] in a table with unallocated chunks (or past its end).
    #[inline(never)]
    fn lookup_incomplete(&self, region: u64) -> Option<u32> {
        if region >= u64::from(self.page_total) {
            return None;
        }
        // Below page_total, so it fits in u32.
        let region = region as u32;
        if self.chunk_allocated(region >> CHUNK_SHIFT) {
            self.entry(region)
        } else {
            None
        }
    }

    /// The entry of `region`, which is in an allocated chunk (so its block
    /// is its own; the zero block would read as path 0). `None` only past
    /// the blocks, which an allocated chunk never is.
    #[inline(always)]
    fn entry(&self, region: u32) -> Option<u32> {
        let (word, shift) = self.position(region);
        let block = self.blocks.get(word >> BLOCK_SHIFT)?;
        Some(self.packing.field(block.words[word & BLOCK_MASK], shift))
    }

    /// Sets `complete_below` from the `allocated` bitmap.
    fn note_completeness(&mut self) {
        let chunks = chunk_count(self.page_total);
        let (full_words, tail) = ((chunks >> 6) as usize, chunks & 63);
        let complete = self.allocated.iter().enumerate().all(|(i, &word)| match i {
            i if i < full_words => word == u64::MAX,
            // The last word holds `tail` chunks (bits past them are 0).
            _ => word == (1u64 << tail) - 1,
        });
        self.complete_below = if complete { self.page_total } else { 0 };
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

    /// A private copy of block `index` (zeroed past the table).
    fn block_copy(&self, index: usize) -> Result<KBox<Words>, AllocError> {
        let mut words = zeroed_words()?;
        if let Some(block) = self.blocks.get(index) {
            *words = *block.words;
        }
        Ok(words)
    }

    /// Publishes `words` as block `index` of this (unpublished) table.
    fn store_block(&mut self, index: usize, words: KBox<Words>) -> Result<(), AllocError> {
        let block = Arc::new(Block { words }, GFP_KERNEL)?;
        if let Some(slot) = self.blocks.get_mut(index) {
            *slot = block;
        }
        Ok(())
    }

    /// Sets chunk `chunk`'s allocated bit (out of range: no-op).
    fn mark(&mut self, chunk: u32, allocated: bool) {
        if let Some(word) = self.allocated.get_mut((chunk >> 6) as usize) {
            let bit = 1u64 << (chunk & 63);
            if allocated {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    /// Whether chunk `index` holds entries (its regions are mapped).
    #[inline(always)]
    pub(crate) fn chunk_allocated(&self, index: u32) -> bool {
        self.allocated
            .get((index >> 6) as usize)
            .is_some_and(|word| word.wrapping_shr(index & 63) & 1 != 0)
    }

    /// Frees chunk `index`: its regions become unmapped, and the blocks that
    /// held only its words (and unallocated chunks') are released. Out of
    /// range is a no-op.
    pub(crate) fn free_chunk(&mut self, index: u32) {
        if index >= chunk_count(self.page_total) {
            return;
        }
        self.mark(index, false);
        self.complete_below = 0;
        let words = self.packing.chunk_words();
        let start = self.packing.chunk_start(index);
        let chunk_of = |word: usize| word.checked_div(words).unwrap_or(0) as u32;
        for block in start >> BLOCK_SHIFT..=(start + words - 1) >> BLOCK_SHIFT {
            // The chunks with words in `block`.
            let first = chunk_of(block * BLOCK_WORDS);
            let last = chunk_of((block + 1) * BLOCK_WORDS - 1);
            if !(first..=last).any(|c| self.chunk_allocated(c)) {
                let zero = self.zero.clone();
                if let Some(slot) = self.blocks.get_mut(block) {
                    *slot = zero;
                }
            }
        }
    }

    /// Storage blocks of the table's own, not the zero block (memory held:
    /// 4 KiB each).
    #[cfg(test)]
    pub(crate) fn blocks_held(&self) -> usize {
        self.blocks
            .iter()
            .filter(|b| !Arc::ptr_eq(b, &self.zero))
            .count()
    }

    /// Whether lookups skip the `allocated` bitmap (every chunk allocated).
    #[cfg(test)]
    pub(crate) fn is_complete(&self) -> bool {
        self.complete_below == self.page_total && self.page_total > 0
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

/// Writes entries into an unpublished [`PageTable`]: each block it touches is
/// copied (or allocated, zeroed) once and kept open while consecutive writes
/// land in it, so tables already published never change. Writing to an
/// unallocated chunk allocates it, its entries on path 0.
///
/// Call [`Editor::finish`] to store the last open block; an editor dropped
/// without it (after an error) leaves the table partly updated, which is fine
/// because such a table is discarded, never published.
pub(crate) struct Editor<'t> {
    table: &'t mut PageTable,
    open: Option<(usize, KBox<Words>)>,
}

impl Editor<'_> {
    /// Maps `region` to `path`.
    pub(crate) fn set(&mut self, region: u32, path: u32) -> Result<(), UpdateError> {
        if region >= self.table.page_total {
            return Err(UpdateError::RegionOutOfRange(region));
        }
        if path >= self.table.dev_count {
            return Err(UpdateError::NoSuchPath(region, path));
        }
        let chunk = region >> CHUNK_SHIFT;
        if !self.table.chunk_allocated(chunk) {
            self.allocate(chunk)?;
        }
        let mask = self.table.packing.mask;
        let (word, shift) = self.table.position(region);
        let w = &mut self.block(word >> BLOCK_SHIFT)?[word & BLOCK_MASK];
        *w = (*w & !(mask << shift)) | (u64::from(path) << shift);
        Ok(())
    }

    /// Allocates chunk `chunk`: its words are zeroed (every entry on path 0).
    fn allocate(&mut self, chunk: u32) -> Result<(), AllocError> {
        let start = self.table.packing.chunk_start(chunk);
        for word in start..start + self.table.packing.chunk_words() {
            self.block(word >> BLOCK_SHIFT)?[word & BLOCK_MASK] = 0;
        }
        self.table.mark(chunk, true);
        Ok(())
    }

    /// The open copy of block `index`, storing the previously open one.
    fn block(&mut self, index: usize) -> Result<&mut Words, AllocError> {
        let open = match self.open.take() {
            Some((i, words)) if i == index => (i, words),
            other => {
                if let Some((i, words)) = other {
                    self.table.store_block(i, words)?;
                }
                (index, self.table.block_copy(index)?)
            }
        };
        Ok(&mut *self.open.insert(open).1)
    }

    /// The path `region` maps to in the table being edited (`None`: unmapped).
    pub(crate) fn get(&self, region: u32) -> Option<u32> {
        let table = &*self.table;
        if region >= table.page_total || !table.chunk_allocated(region >> CHUNK_SHIFT) {
            return None;
        }
        let (word, shift) = table.position(region);
        match &self.open {
            Some((i, words)) if *i == word >> BLOCK_SHIFT => {
                Some(table.packing.field(words[word & BLOCK_MASK], shift))
            }
            _ => table.entry(region),
        }
    }

    /// Stores the open block; the table is then ready to publish.
    pub(crate) fn finish(mut self) -> Result<(), UpdateError> {
        if let Some((i, words)) = self.open.take() {
            self.table.store_block(i, words)?;
        }
        // Writes only allocate chunks: a complete table stays complete.
        if self.table.complete_below == 0 {
            self.table.note_completeness();
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
