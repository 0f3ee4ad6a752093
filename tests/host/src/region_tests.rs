//! `pure/region.rs`: region index and distance to the region's end, in the
//! shift, reciprocal and divide forms, against plain arithmetic.

use crate::region::RegionSize;
use core::num::NonZeroU64;
use proptest::prelude::*;

fn size(n: u64, max_offset: u64) -> RegionSize {
    RegionSize::new(NonZeroU64::new(n).expect("non-zero"), max_offset)
}

/// Offsets where a reciprocal would first go wrong: both sides of every
/// multiple of `d` near 0, near `max`, and `max` itself.
fn edges(d: u64, max: u64) -> impl Iterator<Item = u64> {
    let top = max / d;
    let multiples = (0..4).chain(top.saturating_sub(4)..=top);
    multiples
        .flat_map(move |q| {
            let m = q * d;
            [m.wrapping_sub(1), m, m + 1, m + d - 1]
        })
        .chain([max, max.saturating_sub(1)])
        .filter(move |&n| n <= max)
}

#[test]
fn each_size_takes_its_form() {
    assert_eq!(size(1, u64::MAX), RegionSize::Shift(0));
    assert_eq!(size(2048, 100), RegionSize::Shift(11));
    assert_eq!(size(1 << 63, u64::MAX), RegionSize::Shift(63));
    assert!(matches!(size(120, 1 << 40), RegionSize::Reciprocal { .. }));
    assert!(matches!(
        size(u32::MAX as u64, (1 << 62) - 1),
        RegionSize::Reciprocal { .. }
    ));
    // A target of 2^62 sectors or more, or a region of 2^32 or more: divide.
    assert!(matches!(size(120, 1 << 62), RegionSize::Div(_)));
    assert!(matches!(size((1 << 32) + 1, 1000), RegionSize::Div(_)));
    assert!(matches!(size(u64::MAX, u64::MAX), RegionSize::Div(_)));
}

#[test]
fn region_ends_are_exact() {
    let s = size(8, 100);
    assert_eq!((s.index(7), s.left(7)), (0, 1));
    assert_eq!((s.index(8), s.left(8)), (1, 8));
    let s = size(3, 100);
    assert_eq!((s.index(5), s.left(5)), (1, 1));
    assert_eq!((s.index(6), s.left(6)), (2, 3));
    assert_eq!(size(u64::MAX, u64::MAX).left(u64::MAX), u64::MAX);
}

#[test]
fn reciprocal_is_exact_at_the_edges_of_the_largest_targets() {
    // Every non-power-of-two size up to 4096 and sizes near 2^32, over the
    // largest target each can serve (2^62 sectors) and over targets of every
    // bit length: both sides of the first and last multiples.
    let sizes = (3..=4096u64).filter(|d| !d.is_power_of_two()).chain([
        (1 << 31) + 1,
        (1 << 32) - 3,
        (1 << 32) - 1,
        1_000_000_007,
    ]);
    for d in sizes {
        for bits in [1u32, 13, 31, 32, 33, 40, 50, 61, 62] {
            let max = (1u64 << bits) - 1;
            let s = size(d, max);
            assert!(
                matches!(s, RegionSize::Reciprocal { .. }),
                "d={d} bits={bits}"
            );
            for n in edges(d, max) {
                assert_eq!(s.index(n), n / d, "d={d} max={max} n={n}");
            }
        }
    }
}

proptest! {
    #[test]
    fn index_and_left_match_division(d in 1u64.., max in any::<u64>(), n in any::<u64>()) {
        let n = if max == u64::MAX { n } else { n % (max + 1) };
        let s = size(d, max);
        prop_assert_eq!(s.index(n), n / d);
        prop_assert_eq!(s.left(n), d - n % d);
    }

    #[test]
    fn reciprocal_matches_division(d in 3u64..1 << 32, bits in 1u32..=62, n in any::<u64>()) {
        prop_assume!(!d.is_power_of_two());
        let max = (1u64 << bits) - 1;
        let n = n & max;
        let s = size(d, max);
        let is_reciprocal = matches!(s, RegionSize::Reciprocal { .. });
        prop_assert!(is_reciprocal);
        prop_assert_eq!(s.index(n), n / d);
        prop_assert_eq!(s.left(n), d - n % d);
    }

    #[test]
    fn shift_form_matches_division(bits in 0u32..64, offset in any::<u64>()) {
        let n = 1u64 << bits;
        let s = size(n, u64::MAX);
        prop_assert_eq!(s.index(offset), offset / n);
        prop_assert_eq!(s.left(offset), n - offset % n);
    }
}
