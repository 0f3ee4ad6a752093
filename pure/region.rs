// SPDX-License-Identifier: GPL-2.0

//! Regions: which region a sector offset falls in, and how far it is to the
//! region's end. A region size that is a power of two costs a shift; any
//! other size costs a multiply by a precomputed reciprocal and a shift, exact
//! for every offset of the target. Neither divides on the hot path (upstream
//! dm-switch divides for the second kind).
//!
//! Pure code, also compiled into the host tests.

use core::num::NonZeroU64;

/// A region size in sectors, prepared for the I/O path of a target whose
/// offsets are at most `max_offset` (its length minus one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegionSize {
    /// Power of two: shift by this many bits.
    Shift(u32),
    /// Otherwise: `index(n) = (n * multiplier) >> (64 + shift)`, exact for
    /// every `n <= max_offset` (see [`RegionSize::new`] for the proof).
    Reciprocal {
        size: NonZeroU64,
        multiplier: u64,
        shift: u32,
    },
    /// A size or a target too large for a 64-bit reciprocal (a region of
    /// 2^32 sectors or more, or a target of 2^62 sectors or more): divide,
    /// out of line.
    Div(NonZeroU64),
}

impl RegionSize {
    /// The region size `sectors`, for offsets `0..=max_offset`.
    ///
    /// For a size `d` that is not a power of two, with `L` the bits of
    /// `max_offset` and `D` the bits of `d` (so `n * d < 2^(L + D)` for every
    /// offset `n`): `k = max(64, L + D)` and `multiplier = floor(2^k / d) + 1`,
    /// so `multiplier * d = 2^k + e` with `0 < e <= d`. Then
    /// `n * multiplier / 2^k = n / d + n * e / (d * 2^k)`, and the error term
    /// is below `n / 2^k < 1 / d` (as `n * d < 2^k`); `n / d` is at most
    /// `(d - 1) / d` above its floor, so the floor of the sum is `n / d`.
    /// The multiplier fits in 64 bits: for `k = 64` it is at most
    /// `2^64 / 3 + 1`; otherwise, since `d > 2^(D - 1)` (not a power of two),
    /// it is at most `2^(L + 1) <= 2^63` when `L <= 62`. The host tests check
    /// the bounds and random offsets against a division.
    pub(crate) fn new(sectors: NonZeroU64, max_offset: u64) -> Self {
        if sectors.is_power_of_two() {
            return Self::Shift(sectors.trailing_zeros());
        }
        let d = sectors.get();
        let offset_bits = u64::BITS - max_offset.leading_zeros();
        if d >> 32 != 0 || offset_bits > 62 {
            return Self::Div(sectors);
        }
        let size_bits = u64::BITS - d.leading_zeros();
        // At most 62 + 32 - 64 = 30.
        let shift = (offset_bits + size_bits).saturating_sub(64);
        Self::Reciprocal {
            size: sectors,
            multiplier: reciprocal(d, shift),
            shift,
        }
    }

    /// [`Self::index`] where it needs no divide (every size but
    /// [`RegionSize::Div`]'s): one shift, or a multiply and a shift.
    #[inline(always)]
    pub(crate) fn index_without_divide(&self, offset: u64) -> Option<u64> {
        match *self {
            Self::Div(_) => None,
            _ => Some(self.index(offset)),
        }
    }

    /// Region index of sector offset `offset` (at most the `max_offset` the
    /// size was made for).
    #[inline(always)]
    pub(crate) fn index(&self, offset: u64) -> u64 {
        match *self {
            // s < 64 (trailing zeros of a non-zero u64), so the wrapping shift
            // is the plain shift, without an overflow-check branch.
            Self::Shift(s) => offset.wrapping_shr(s),
            Self::Reciprocal {
                multiplier, shift, ..
            } => {
                // A 64 x 64 -> 128-bit multiply cannot overflow; shift <= 30.
                let high = (u128::from(offset) * u128::from(multiplier)) >> 64;
                (high as u64).wrapping_shr(shift)
            }
            Self::Div(d) => divide(offset, d),
        }
    }

    /// Sectors from `offset` to the end of its region (at least 1).
    pub(crate) fn left(&self, offset: u64) -> u64 {
        match *self {
            Self::Shift(s) => (1u64 << s) - (offset & ((1u64 << s) - 1)),
            Self::Reciprocal { size: d, .. } | Self::Div(d) => d.get() - offset % d,
        }
    }
}

/// `floor(2^(64 + shift) / d) + 1`, for `2^shift < d < 2^32` (so the
/// quotient is below 2^64): long division of `2^shift` followed by 64 zero
/// bits, one bit at a time (the kernel has no 128-bit divide).
fn reciprocal(d: u64, shift: u32) -> u64 {
    let mut rem = 1u64 << shift;
    let mut quotient = 0u64;
    for _ in 0..u64::BITS {
        // rem < d < 2^32: no overflow.
        rem <<= 1;
        quotient <<= 1;
        if rem >= d {
            rem -= d;
            quotient |= 1;
        }
    }
    quotient.wrapping_add(1)
}

/// `offset / d`, for the sizes a reciprocal cannot serve (see
/// [`RegionSize::Div`]). Out of line, so that `map()` itself contains no
/// divide instruction: `scripts/check-no-div.sh` checks the module's
/// disassembly for that.
#[inline(never)]
fn divide(offset: u64, d: NonZeroU64) -> u64 {
    offset / d
}
