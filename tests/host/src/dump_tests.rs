//! `pure/dump.rs`: a table snapshot as upload windows. Every window is a
//! valid upload, and replaying the windows as uploads (through the kernel's
//! own `Request::parse` + `PageTable::uploaded`) restores the same placement,
//! userland words and allocated chunks.

use crate::abi::{fields_per_word, pg, CHUNK_PTE_COUNT, MAX_IPC_MSG_LEN};
use crate::dump::{window_pte_bits, Dump, Step};
use crate::ptbl::{min_pte_bits, PageTable};
use crate::wire::Request;
use proptest::prelude::*;

/// Every window of a dump of `table`, each at most `room` bytes.
fn windows(table: &PageTable, devs: u32, room: usize) -> Vec<Vec<u8>> {
    let snapshot =
        PageTable::derive(Some(table), devs, table.page_total(), table.pte_bits()).unwrap();
    let mut dump = Dump::new(snapshot, 253, 9, devs as u16);
    let mut out = Vec::new();
    let mut buf = vec![0u8; room];
    loop {
        match dump.next_window(&mut buf) {
            Step::Window(n) => {
                assert_eq!(
                    buf[pg::RESERVED],
                    table.pte_bits(),
                    "reserved: the table's pte_bits"
                );
                out.push(buf[..n].to_vec());
            }
            Step::Done => return out,
            Step::NoRoom => panic!("{room} bytes hold no window"),
        }
    }
}

/// The table the windows make when uploaded in order, starting from `start`.
fn replay(windows: &[Vec<u8>], devs: u32, start: Option<PageTable>) -> PageTable {
    let mut table = start;
    for w in windows {
        let req = Request::parse(w).unwrap_or_else(|e| panic!("window refused: {e}"));
        assert_eq!(req.header.dev_count as u32, devs);
        table = Some(PageTable::uploaded(table.as_ref(), devs, &req).unwrap());
    }
    table.expect("at least one window")
}

/// Placement, userland words and allocated chunks are the same.
fn assert_same(a: &PageTable, b: &PageTable) {
    assert_eq!(a.page_total(), b.page_total());
    assert_eq!(a.userland(), b.userland());
    let chunks = a.page_total().div_ceil(CHUNK_PTE_COUNT);
    for c in 0..chunks {
        assert_eq!(a.chunk_allocated(c), b.chunk_allocated(c), "chunk {c}");
    }
    for r in 0..u64::from(a.page_total()) {
        assert_eq!(a.lookup(r), b.lookup(r), "region {r}");
    }
}

#[test]
fn widths_divide_32() {
    for bits in 1u8..=32 {
        let w = window_pte_bits(bits);
        assert!(
            w >= bits
                && 32 % u32::from(w) == 0
                && CHUNK_PTE_COUNT.is_multiple_of(fields_per_word(w))
        );
    }
    assert_eq!(
        (window_pte_bits(3), window_pte_bits(4), window_pte_bits(17)),
        (4, 4, 32)
    );
}

#[test]
fn unallocated_chunks_are_free_windows() {
    let devs = 3;
    let mut t = PageTable::empty(devs, 3 * CHUNK_PTE_COUNT + 5, 2).unwrap();
    t.set_entries([(CHUNK_PTE_COUNT + 7, 2)]).unwrap();
    t.set_userland([0x2011, 7]);
    let w = windows(&t, devs, MAX_IPC_MSG_LEN);
    let heads: Vec<(u32, u32)> = w
        .iter()
        .map(|w| {
            let r = Request::parse(w).unwrap();
            (r.header.page_offset, r.header.page_count)
        })
        .collect();
    // Chunk 0 free, chunk 1 in one window, chunks 2 and 3 free.
    assert_eq!(
        heads,
        vec![
            (0, 0),
            (CHUNK_PTE_COUNT, CHUNK_PTE_COUNT),
            (2 * CHUNK_PTE_COUNT, 0),
            (3 * CHUNK_PTE_COUNT, 0)
        ]
    );
    assert!(w
        .iter()
        .all(|w| Request::parse(w).unwrap().header.userland == [0x2011, 7]));
    assert_same(&replay(&w, devs, None), &t);
}

#[test]
fn small_rooms_split_windows_and_too_small_says_so() {
    let devs = 5;
    let t = PageTable::round_robin(devs, 1000).unwrap();
    // Room for the header and one word: 8 entries of 4 bits (3 rounded up).
    let w = windows(&t, devs, pg::HDR_LEN + 4);
    assert_eq!(w.len(), 125);
    assert_same(&replay(&w, devs, None), &t);
    let snapshot = PageTable::derive(Some(&t), devs, 1000, 3).unwrap();
    let mut dump = Dump::new(snapshot, 1, 2, 5);
    assert_eq!(dump.next_window(&mut [0u8; pg::HDR_LEN]), Step::NoRoom);
    assert_eq!(dump.next_window(&mut [0u8; 8]), Step::NoRoom);
}

#[test]
fn empty_table_dumps_only_frees() {
    let t = PageTable::empty(2, 20_000, 1).unwrap();
    let w = windows(&t, 2, 4096);
    assert_eq!(w.len(), 3);
    assert!(w.iter().all(|w| w.len() == pg::HDR_LEN));
    assert_same(&replay(&w, 2, None), &t);
}

proptest! {
    /// Random tables (any path count, width, size, writes and frees), dumped
    /// through random room sizes, replay to the same table, from nothing and
    /// over a different table of the same geometry.
    #[test]
    fn dump_then_upload_is_the_identity(
        devs in 1u32..=300,
        extra_bits in 0u8..3,
        total in 1u32..40_000,
        writes in prop::collection::vec((any::<u32>(), any::<u32>()), 0..300),
        frees in prop::collection::vec(any::<u32>(), 0..4),
        userland in any::<[u32; 2]>(),
        room in (pg::HDR_LEN + 4)..70_000,
    ) {
        let bits = (min_pte_bits(devs) + extra_bits).min(32);
        let mut t = PageTable::empty(devs, total, bits).unwrap();
        t.set_entries(writes.iter().map(|&(r, p)| (r % total, p % devs))).unwrap();
        for f in frees {
            t.free_chunk(f % total.div_ceil(CHUNK_PTE_COUNT));
        }
        t.set_userland(userland);
        let w = windows(&t, devs, room);
        prop_assert!(w.iter().all(|w| w.len() <= room.min(MAX_IPC_MSG_LEN)));
        assert_same(&replay(&w, devs, None), &t);
        let other = PageTable::round_robin(devs, total).unwrap();
        let other = PageTable::derive(Some(&other), devs, total, window_pte_bits(bits)).unwrap();
        assert_same(&replay(&w, devs, Some(other)), &t);
    }
}
