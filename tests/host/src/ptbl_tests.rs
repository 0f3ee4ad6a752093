//! Page-table arithmetic: widths, chunking, copy-on-write updates.

use crate::ptbl::{chunk_count, min_pte_bits, Packing, PageTable, UpdateError, CHUNK_ENTRIES};
use proptest::prelude::*;

#[test]
fn pte_bits_per_path_count() {
    let cases = [
        (1, 1),
        (2, 1),
        (3, 2),
        (4, 2),
        (5, 3),
        (8, 3),
        (9, 4),
        (16, 4),
        (17, 5),
        (255, 8),
        (256, 8),
        (257, 9),
        (65535, 16),
    ];
    for (devs, bits) in cases {
        assert_eq!(min_pte_bits(devs), bits, "min_pte_bits({devs})");
    }
}

/// The reciprocal in `Packing::locate` equals the divide for every entry of
/// a chunk, at every path count's packing (every width 1..=16 occurs).
#[test]
fn locate_is_exact_for_every_entry_and_width() {
    let mut widths = std::collections::BTreeSet::new();
    for devs in 1..=65535u32 {
        let bits = u32::from(min_pte_bits(devs));
        if !widths.insert(bits) {
            continue;
        }
        let packing = Packing::for_paths(devs);
        let per_word = 64 / bits;
        for k in 0..CHUNK_ENTRIES {
            let want = ((k / per_word) as usize, (k % per_word) * bits);
            assert_eq!(packing.locate(k), want, "devs {devs} entry {k}");
        }
        assert_eq!(
            packing.chunk_words(),
            CHUNK_ENTRIES.div_ceil(per_word) as usize
        );
    }
    assert_eq!(widths.len(), 16);
}

/// A chunk takes no more 64-bit words than upstream's `switch` uses for the
/// same entries: `ceil(log2 paths)` bits, `64 / bits` per word.
#[test]
fn chunks_are_packed_like_upstream() {
    for (devs, words) in [
        (2, 128),
        (3, 256),
        (5, 391),
        (17, 683),
        (33, 820),
        (65, 911),
        (257, 1171),
    ] {
        assert_eq!(Packing::for_paths(devs).chunk_words(), words, "devs {devs}");
    }
}

#[test]
fn chunk_counts() {
    assert_eq!(chunk_count(0), 0);
    assert_eq!(chunk_count(1), 1);
    assert_eq!(chunk_count(CHUNK_ENTRIES), 1);
    assert_eq!(chunk_count(CHUNK_ENTRIES + 1), 2);
    assert_eq!(chunk_count(u32::MAX), 524288);
}

#[test]
fn round_robin_every_width() {
    for devs in [1, 2, 3, 4, 5, 16, 17, 255, 256, 257, 65535] {
        let total = 3 * CHUNK_ENTRIES + 77;
        let t = PageTable::round_robin(devs, total).unwrap();
        for r in (0..total).step_by(7).chain(total - 5..total) {
            assert_eq!(
                t.lookup(u64::from(r)),
                Some(r % devs),
                "devs {devs} region {r}"
            );
        }
        assert_eq!(t.lookup(u64::from(total)), None, "past the table");
        assert_eq!(t.lookup(u64::MAX), None);
    }
}

#[test]
fn empty_table_is_unmapped() {
    let t = PageTable::empty(3, 100_000, 2).unwrap();
    for r in [0u64, 1, 8191, 8192, 99_999] {
        assert_eq!(t.lookup(r), None);
    }
}

#[test]
fn writes_leave_neighbours_alone() {
    let mut t = PageTable::round_robin(16, 20_000).unwrap();
    t.set_entries([(8190, 15), (8191, 14), (8192, 13), (5, 0)])
        .unwrap();
    assert_eq!(t.lookup(8190), Some(15));
    assert_eq!(t.lookup(8191), Some(14));
    assert_eq!(t.lookup(8192), Some(13));
    assert_eq!(t.lookup(5), Some(0));
    for r in [4u64, 6, 8189, 8193, 8194] {
        assert_eq!(t.lookup(r), Some((r % 16) as u32), "neighbour {r}");
    }
}

#[test]
fn derive_is_copy_on_write() {
    let base = PageTable::round_robin(3, 30_000).unwrap();
    let mut next = PageTable::derive(Some(&base), 3, 30_000, min_pte_bits(3)).unwrap();
    next.set_entries((0..30_000).map(|r| (r, 2))).unwrap();
    next.free_chunk(1);
    for r in (0..30_000u64).step_by(101) {
        assert_eq!(
            base.lookup(r),
            Some((r % 3) as u32),
            "published table changed at {r}"
        );
        let want = if (8192..16384).contains(&r) {
            None
        } else {
            Some(2)
        };
        assert_eq!(next.lookup(r), want, "derived table at {r}");
    }
}

#[test]
fn derive_with_new_geometry_starts_empty() {
    let mut base = PageTable::round_robin(4, 1000).unwrap();
    base.set_userland([7, 9]);
    let same = PageTable::derive(Some(&base), 4, 1000, 2).unwrap();
    assert_eq!(same.lookup(999), Some(3));
    assert_eq!(same.userland(), [7, 9]);
    for (total, bits) in [(1001, 2), (1000, 3)] {
        let other = PageTable::derive(Some(&base), 4, total, bits).unwrap();
        assert_eq!(other.lookup(999), None, "total {total} bits {bits}");
        assert_eq!(other.page_total(), total);
        assert_eq!(other.pte_bits(), bits);
    }
}

#[test]
fn refused_entries() {
    let mut t = PageTable::empty(3, 10, 2).unwrap();
    assert_eq!(
        t.set_entries([(10, 0)]),
        Err(UpdateError::RegionOutOfRange(10))
    );
    assert_eq!(t.set_entries([(2, 3)]), Err(UpdateError::NoSuchPath(2, 3)));
}

#[test]
fn free_chunk_out_of_range_is_noop() {
    let mut t = PageTable::round_robin(2, 100).unwrap();
    t.free_chunk(5);
    assert_eq!(t.lookup(99), Some(1));
    t.free_chunk(0);
    assert_eq!(t.lookup(99), None);
}

/// A table with every chunk allocated is looked up without the bitmap; a
/// free makes it incomplete (the freed chunk reads unmapped, the others keep
/// their entries) and writing that chunk again completes it.
#[test]
fn completeness_follows_frees_and_writes() {
    let total = 2 * CHUNK_ENTRIES + 10;
    let t = PageTable::round_robin(5, total).unwrap();
    assert!(t.is_complete());
    let mut freed = PageTable::derive(Some(&t), 5, total, 3).unwrap();
    assert!(freed.is_complete(), "derive keeps completeness");
    freed.free_chunk(1);
    assert!(!freed.is_complete());
    assert!(t.is_complete(), "the published table is untouched");
    for r in [0, CHUNK_ENTRIES - 1, 2 * CHUNK_ENTRIES, total - 1] {
        assert_eq!(freed.lookup(u64::from(r)), Some(r % 5), "region {r}");
    }
    for r in [CHUNK_ENTRIES, CHUNK_ENTRIES + 77, 2 * CHUNK_ENTRIES - 1] {
        assert_eq!(freed.lookup(u64::from(r)), None, "freed region {r}");
    }
    assert_eq!(freed.lookup(u64::from(total)), None);
    let mut refilled = PageTable::derive(Some(&freed), 5, total, 3).unwrap();
    refilled.set_entries([(CHUNK_ENTRIES + 3, 4)]).unwrap();
    assert!(refilled.is_complete());
    assert_eq!(refilled.lookup(u64::from(CHUNK_ENTRIES + 3)), Some(4));
    assert_eq!(refilled.lookup(u64::from(CHUNK_ENTRIES + 4)), Some(0));
    assert_eq!(refilled.lookup(u64::from(total)), None, "past the end");

    // A partial upload completes a table only once its last chunk is written;
    // chunk counts that are and are not multiples of 64 (the bitmap's words).
    for chunks in [1, 63, 64, 65, 130] {
        let total = chunks * CHUNK_ENTRIES;
        let mut e = PageTable::empty(2, total, 1).unwrap();
        for c in 0..chunks {
            assert!(!e.is_complete(), "{c} of {chunks} chunks");
            e.set_entries([(c * CHUNK_ENTRIES, 1)]).unwrap();
        }
        assert!(e.is_complete(), "{chunks} chunks");
        assert_eq!(e.lookup(u64::from(total - 1)), Some(0));
    }
}

#[test]
fn editor_reads_its_own_writes() {
    let mut t = PageTable::empty(5, 20_000, 3).unwrap();
    let mut e = t.edit();
    e.set(10, 4).unwrap();
    assert_eq!(e.get(10), Some(4));
    e.set(9000, 3).unwrap();
    assert_eq!(e.get(10), Some(4), "closed chunk still readable");
    assert_eq!(e.get(9000), Some(3));
    assert_eq!(e.get(19_999), None, "unallocated chunk");
    e.finish().unwrap();
    assert_eq!(t.lookup(9000), Some(3));
}

proptest! {
    /// Random writes and frees behave like a plain array of Option<path>.
    #[test]
    fn matches_a_reference_model(
        devs in prop_oneof![1u32..300, 300u32..=65535],
        total in 1u32..40_000,
        ops in prop::collection::vec((0u32..40_000, 0u32..65535, prop::bool::weighted(0.05)), 1..300),
    ) {
        let mut model: Vec<Option<u32>> = vec![None; total as usize];
        let mut table = PageTable::empty(devs, total, min_pte_bits(devs)).unwrap();
        for (region, path, free) in ops {
            let region = region % total;
            let mut next = PageTable::derive(Some(&table), devs, total, min_pte_bits(devs)).unwrap();
            if free {
                let c = region / CHUNK_ENTRIES;
                next.free_chunk(c);
                let end = ((c + 1) * CHUNK_ENTRIES).min(total);
                for m in &mut model[(c * CHUNK_ENTRIES) as usize..end as usize] {
                    *m = None;
                }
            } else {
                let path = path % devs;
                next.set_entries([(region, path)]).unwrap();
                let c = region / CHUNK_ENTRIES;
                let end = ((c + 1) * CHUNK_ENTRIES).min(total);
                for m in &mut model[(c * CHUNK_ENTRIES) as usize..end as usize] {
                    m.get_or_insert(0);
                }
                model[region as usize] = Some(path);
            }
            table = next;
        }
        for (r, want) in model.iter().enumerate() {
            prop_assert_eq!(table.lookup(r as u64), *want, "region {}", r);
        }
        prop_assert_eq!(table.is_complete(), model.iter().all(Option::is_some));
    }
}

/// Growing keeps old entries, takes the base's for new regions (round robin)
/// or leaves new chunks unmapped and the boundary chunk's new regions on
/// path 0; shrinking then growing again does not bring stale entries back.
#[test]
fn resized_keeps_old_entries() {
    let devs = 3;
    let old_total = CHUNK_ENTRIES + 100;
    let mut old = PageTable::empty(devs, old_total, 2).unwrap();
    old.set_entries((0..old_total).map(|r| (r, (r / 7) % devs)))
        .unwrap();
    old.set_userland([7, 9]);
    let new_total = 3 * CHUNK_ENTRIES + 5;
    let base = PageTable::round_robin(devs, new_total).unwrap();
    for with_base in [false, true] {
        let t = PageTable::resized(&old, new_total, with_base.then_some(&base)).unwrap();
        assert_eq!(
            (t.page_total(), t.pte_bits(), t.userland()),
            (new_total, 2, [7, 9])
        );
        for r in 0..new_total {
            let want = if r < old_total {
                Some((r / 7) % devs)
            } else if with_base {
                Some(r % devs)
            } else if r < 2 * CHUNK_ENTRIES {
                Some(0)
            } else {
                None
            };
            assert_eq!(t.lookup(u64::from(r)), want, "base {with_base} region {r}");
        }
        assert_eq!(t.lookup(u64::from(new_total)), None);
    }
    // Shrink (the shared chunk keeps entries past the new end), grow back.
    let small = PageTable::resized(&old, CHUNK_ENTRIES + 10, None).unwrap();
    assert_eq!(
        small.lookup(u64::from(CHUNK_ENTRIES + 9)),
        Some(((CHUNK_ENTRIES + 9) / 7) % devs)
    );
    assert_eq!(small.lookup(u64::from(CHUNK_ENTRIES + 10)), None);
    let again = PageTable::resized(&small, old_total, None).unwrap();
    for r in CHUNK_ENTRIES + 10..old_total {
        assert_eq!(again.lookup(u64::from(r)), Some(0), "region {r}");
    }
    // A freed chunk stays unallocated; the old table is unchanged.
    let mut freed = PageTable::derive(Some(&old), devs, old_total, 2).unwrap();
    freed.free_chunk(1);
    let t = PageTable::resized(&freed, new_total, Some(&base)).unwrap();
    assert_eq!(t.lookup(u64::from(CHUNK_ENTRIES + 1)), None);
    assert_eq!(t.lookup(u64::from(old_total + 1)), None);
    assert_eq!(
        t.lookup(u64::from(2 * CHUNK_ENTRIES)),
        Some((2 * CHUNK_ENTRIES) % devs)
    );
    assert_eq!(
        old.lookup(u64::from(CHUNK_ENTRIES + 1)),
        Some(((CHUNK_ENTRIES + 1) / 7) % devs)
    );
}

/// Words are stored in 4 KiB blocks with no padding per chunk: 5 paths
/// (3-bit entries, 391 words per chunk) over 4.5 chunks hold 4 blocks;
/// freeing chunks releases exactly the blocks no allocated chunk uses.
#[test]
fn blocks_follow_the_packed_size_and_frees() {
    let total = 4 * CHUNK_ENTRIES + CHUNK_ENTRIES / 2;
    let t = PageTable::round_robin(5, total).unwrap();
    assert_eq!(t.blocks_held(), (5 * 391usize).div_ceil(512));
    let mut one = PageTable::derive(Some(&t), 5, total, 3).unwrap();
    one.free_chunk(1); // words 391..782: blocks 0 and 1 are shared with chunks 0 and 2
    assert_eq!(one.blocks_held(), 4);
    one.free_chunk(2); // block 1 (words 512..1024) now holds only freed chunks
    assert_eq!(one.blocks_held(), 3);
    for r in [0u32, 8191, 3 * CHUNK_ENTRIES, total - 1] {
        assert_eq!(one.lookup(u64::from(r)), Some(r % 5), "region {r}");
    }
    for r in [CHUNK_ENTRIES, 3 * CHUNK_ENTRIES - 1] {
        assert_eq!(one.lookup(u64::from(r)), None, "region {r}");
    }
    // Reallocating a freed chunk starts it on path 0, not on stale words.
    one.set_entries([(CHUNK_ENTRIES + 5, 4)]).unwrap();
    assert_eq!(one.lookup(u64::from(CHUNK_ENTRIES + 5)), Some(4));
    assert_eq!(one.lookup(u64::from(CHUNK_ENTRIES + 6)), Some(0));
    assert_eq!(one.lookup(u64::from(2 * CHUNK_ENTRIES)), None);
    for c in 0..5 {
        one.free_chunk(c);
    }
    assert_eq!(one.blocks_held(), 0);
    assert_eq!(t.blocks_held(), 4, "the shared table is untouched");
}
