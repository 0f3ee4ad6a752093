// SPDX-License-Identifier: GPL-2.0

//! Block-layer identities: [`DevT`], a device number (`dev_t`).

use core::fmt;

/// Bits of the minor number in a kernel `dev_t` (`MINORBITS`).
const MINOR_BITS: u32 = 20;
/// Largest major number (`MAJOR(~0)`: 12 bits).
const MAJOR_MAX: u32 = (1 << (32 - MINOR_BITS)) - 1;
/// Largest minor number (`MINORMASK`).
const MINOR_MAX: u32 = (1 << MINOR_BITS) - 1;

/// A device number, `major:minor`, as the kernel packs it (`MKDEV`); the
/// default is 0:0.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct DevT(u32);

impl DevT {
    /// `major:minor`, or `None` if either is out of range (major < 2^12,
    /// minor < 2^20).
    pub(crate) const fn new(major: u32, minor: u32) -> Option<Self> {
        if major > MAJOR_MAX || minor > MINOR_MAX {
            return None;
        }
        Some(Self((major << MINOR_BITS) | minor))
    }

    /// The major number.
    pub(crate) const fn major(self) -> u32 {
        self.0 >> MINOR_BITS
    }

    /// The minor number.
    pub(crate) const fn minor(self) -> u32 {
        self.0 & MINOR_MAX
    }
}

impl fmt::Display for DevT {
    /// `major:minor`, as `dmsetup` and `/sys/block/*/dev` print it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major(), self.minor())
    }
}
