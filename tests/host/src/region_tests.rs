//! `pure/region.rs`: region index and distance to the region's end, shift and
//! divide forms, against plain arithmetic.

use crate::region::RegionSize;
use core::num::NonZeroU64;
use proptest::prelude::*;

fn size(n: u64) -> RegionSize {
    RegionSize::new(NonZeroU64::new(n).expect("non-zero"))
}

#[test]
fn power_of_two_sizes_shift_and_others_divide() {
    assert_eq!(size(1), RegionSize::Shift(0));
    assert_eq!(size(2048), RegionSize::Shift(11));
    assert_eq!(size(1 << 63), RegionSize::Shift(63));
    assert!(matches!(size(120), RegionSize::Div(_)));
    assert!(matches!(size(u64::MAX), RegionSize::Div(_)));
}

#[test]
fn region_ends_are_exact() {
    let s = size(8);
    assert_eq!((s.index(7), s.left(7)), (0, 1));
    assert_eq!((s.index(8), s.left(8)), (1, 8));
    let s = size(3);
    assert_eq!((s.index(5), s.left(5)), (1, 1));
    assert_eq!((s.index(6), s.left(6)), (2, 3));
    assert_eq!(size(u64::MAX).left(u64::MAX), u64::MAX);
}

proptest! {
    #[test]
    fn index_and_left_match_division(n in 1u64.., offset in any::<u64>()) {
        let s = size(n);
        prop_assert_eq!(s.index(offset), offset / n);
        prop_assert_eq!(s.left(offset), n - offset % n);
    }

    #[test]
    fn shift_form_matches_division(bits in 0u32..64, offset in any::<u64>()) {
        let n = 1u64 << bits;
        let s = size(n);
        prop_assert_eq!(s.index(offset), offset / n);
        prop_assert_eq!(s.left(offset), n - offset % n);
    }
}
