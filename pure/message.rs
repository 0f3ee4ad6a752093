// SPDX-License-Identifier: GPL-2.0

//! `dmsetup message DEV 0 set_region_mappings ...`, with upstream dm-switch's
//! syntax: each argument is `INDEX:PATH` (region INDEX on path PATH), `:PATH`
//! (the next region on PATH) or `Rn,m` (repeat the last `n` entries `m`
//! times); all numbers hexadecimal. Unlike upstream, every number is
//! overflow-checked and the whole message is all-or-nothing: it is applied to
//! a table that is published only if every argument was valid.
//!
//! The one parser of this grammar: the kernel applies it to the page table
//! being built (`ptbl::Editor`), the agent (`--region-mappings`,
//! which compiles this file through `#[path]`) to its own packed table. Both
//! implement [`Regions`]. Pure code, also compiled into the host tests.

use core::fmt;

/// A region table a message edits.
pub(crate) trait Regions {
    /// Regions in the table.
    fn page_total(&self) -> u32;
    /// The path `region` (< `page_total`) is on now (0 when unmapped).
    fn path(&self, region: u32) -> u32;
    /// Puts `region` on `path`.
    fn set(&mut self, region: u32, path: u32) -> Result<(), SetError>;
}

/// Why [`Regions::set`] refused an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetError {
    /// The region is not below `page_total`.
    RegionOutOfRange,
    /// The path does not exist.
    NoSuchPath,
    /// Memory for the new table could not be allocated.
    NoMemory,
}

/// Why a `set_region_mappings` message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageError {
    /// No mapping arguments.
    Empty,
    /// Argument number `.0` (1-based) is malformed.
    Syntax(usize),
    /// Argument `.0` holds a number that does not fit in 32 bits.
    Overflow(usize),
    /// Argument `.0` starts with `:` or `R` but there is no previous region.
    NoPrevious(usize),
    /// Argument `.0`: repeat cycle of `.1` entries reaches before region 0.
    BadCycle(usize, u32),
    /// Argument `.0`: region `.1` is past the table.
    RegionOutOfRange(usize, u64),
    /// Argument `.0`: path `.1` does not exist.
    NoSuchPath(usize, u32),
    /// Memory for the new table could not be allocated.
    NoMemory,
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Empty => write!(f, "set_region_mappings needs at least one mapping"),
            Self::Syntax(i) => write!(
                f,
                "set_region_mappings argument {i}: expected INDEX:PATH, :PATH or Rn,m (hex)"
            ),
            Self::Overflow(i) => write!(f, "set_region_mappings argument {i}: number too large"),
            Self::NoPrevious(i) => {
                write!(f, "set_region_mappings argument {i}: no previous region")
            }
            Self::BadCycle(i, n) => write!(
                f,
                "set_region_mappings argument {i}: invalid cycle length {n:#x}"
            ),
            Self::RegionOutOfRange(i, r) => write!(
                f,
                "set_region_mappings argument {i}: region {r:#x} out of range"
            ),
            Self::NoSuchPath(i, p) => write!(
                f,
                "set_region_mappings argument {i}: path {p:#x} out of range"
            ),
            Self::NoMemory => write!(f, "set_region_mappings: out of memory"),
        }
    }
}

/// Parses a whole hexadecimal `u32`; `None` on an empty string or a bad digit,
/// `Some(Err(()))` on overflow.
fn hex(s: &[u8]) -> Option<Result<u32, ()>> {
    if s.is_empty() {
        return None;
    }
    let mut v: u32 = 0;
    for &c in s {
        let d = char::from(c).to_digit(16)?;
        v = match v.checked_mul(16).and_then(|v| v.checked_add(d)) {
            Some(v) => v,
            None => return Some(Err(())),
        };
    }
    Some(Ok(v))
}

/// Applies the mapping arguments (after the `set_region_mappings` word) to
/// `table`. On error the table must be discarded: earlier arguments may have
/// been applied.
pub(crate) fn apply<'a>(
    table: &mut impl Regions,
    args: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(), MessageError> {
    let mut last: Option<u32> = None;
    let mut seen = 0;
    for (n, arg) in args.into_iter().enumerate() {
        let i = n + 1;
        seen = i;
        let num = |s: &[u8]| match hex(s) {
            None => Err(MessageError::Syntax(i)),
            Some(Err(())) => Err(MessageError::Overflow(i)),
            Some(Ok(v)) => Ok(v),
        };
        if let Some(rest) = arg.strip_prefix(b"R").or_else(|| arg.strip_prefix(b"r")) {
            let comma = rest
                .iter()
                .position(|&c| c == b',')
                .ok_or(MessageError::Syntax(i))?;
            let (cycle, count) = (num(&rest[..comma])?, num(&rest[comma + 1..])?);
            let cur = last.ok_or(MessageError::NoPrevious(i))?;
            if cycle == 0 || cycle - 1 > cur {
                return Err(MessageError::BadCycle(i, cycle));
            }
            let end = u64::from(cur) + u64::from(count);
            if end >= u64::from(table.page_total()) {
                return Err(MessageError::RegionOutOfRange(i, end));
            }
            for region in cur + 1..=cur + count {
                // region - cycle >= cur + 1 - cycle >= 0 by the check above.
                let path = table.path(region - cycle);
                table
                    .set(region, path)
                    .map_err(|e| set_error(i, region, path, e))?;
            }
            last = Some(cur + count);
            continue;
        }
        let colon = arg
            .iter()
            .position(|&c| c == b':')
            .ok_or(MessageError::Syntax(i))?;
        let region = if colon == 0 {
            let prev = last.ok_or(MessageError::NoPrevious(i))?;
            prev.checked_add(1)
                .ok_or(MessageError::RegionOutOfRange(i, u64::from(prev) + 1))?
        } else {
            num(&arg[..colon])?
        };
        let path = num(&arg[colon + 1..])?;
        table
            .set(region, path)
            .map_err(|e| set_error(i, region, path, e))?;
        last = Some(region);
    }
    if seen == 0 {
        return Err(MessageError::Empty);
    }
    Ok(())
}

fn set_error(i: usize, region: u32, path: u32, e: SetError) -> MessageError {
    match e {
        SetError::RegionOutOfRange => MessageError::RegionOutOfRange(i, u64::from(region)),
        SetError::NoSuchPath => MessageError::NoSuchPath(i, path),
        SetError::NoMemory => MessageError::NoMemory,
    }
}
