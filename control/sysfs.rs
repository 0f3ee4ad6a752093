// SPDX-License-Identifier: GPL-2.0

//! `/sys/module/dm_switch/familyid` and `/sys/module/dm_switch/version`, as
//! in the RFC: agents find the netlink family and check the module version.
//! No `MODULE_VERSION` is set, so the loader does not create a `version` file
//! of its own.

use crate::kapi::modattr::File;
use core::fmt;
use kernel::{c_str, prelude::*};

/// A target version, printed `major.minor.patch`.
pub(crate) struct Version(pub(crate) [u32; 3]);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c] = self.0;
        write!(f, "{a}.{b}.{c}")
    }
}

/// The two files, removed when dropped.
pub(crate) struct Files {
    _familyid: File<u16>,
    _version: File<Version>,
}

impl Files {
    /// Creates both files on `module`'s directory (none if either fails).
    pub(crate) fn create(
        module: &'static ThisModule,
        family_id: u16,
        version: [u32; 3],
    ) -> Result<Self> {
        Ok(Self {
            _familyid: File::create(module, c_str!("familyid"), family_id)?,
            _version: File::create(module, c_str!("version"), Version(version))?,
        })
    }
}
