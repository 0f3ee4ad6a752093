// SPDX-License-Identifier: GPL-2.0

//! Regions: which region a sector offset falls in, and how far it is to the
//! region's end. A region size that is a power of two costs a shift (no
//! divide on the hot path); any other size costs a 64-bit divide, as in
//! upstream dm-switch.
//!
//! Pure code, also compiled into the host tests.

use core::num::NonZeroU64;

/// A region size in sectors, prepared for the I/O path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegionSize {
    /// Power of two: shift by this many bits.
    Shift(u32),
    /// Otherwise: divide.
    Div(NonZeroU64),
}

impl RegionSize {
    /// The region size `sectors`.
    pub(crate) fn new(sectors: NonZeroU64) -> Self {
        if sectors.is_power_of_two() {
            Self::Shift(sectors.trailing_zeros())
        } else {
            Self::Div(sectors)
        }
    }

    /// The shift that gives a region index, for a power-of-two size.
    #[inline(always)]
    pub(crate) fn shift(&self) -> Option<u32> {
        match *self {
            Self::Shift(s) => Some(s),
            Self::Div(_) => None,
        }
    }

    /// Region index of sector offset `offset`.
    #[inline(always)]
    pub(crate) fn index(&self, offset: u64) -> u64 {
        match *self {
            // s < 64 (trailing zeros of a non-zero u64), so the wrapping shift
            // is the plain shift, without an overflow-check branch.
            Self::Shift(s) => offset.wrapping_shr(s),
            Self::Div(d) => divide(offset, d),
        }
    }

    /// Sectors from `offset` to the end of its region (at least 1).
    pub(crate) fn left(&self, offset: u64) -> u64 {
        match *self {
            Self::Shift(s) => (1u64 << s) - (offset & ((1u64 << s) - 1)),
            Self::Div(d) => d.get() - offset % d,
        }
    }
}

/// `offset / d`: the I/O path's one divide, for a region size that is not a
/// power of two (upstream divides there too). Out of line, so that `map()`
/// itself contains no divide instruction: `scripts/check-no-div.sh` checks
/// the module's disassembly for that.
#[inline(never)]
fn divide(offset: u64, d: NonZeroU64) -> u64 {
    offset / d
}
