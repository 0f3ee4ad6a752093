// SPDX-License-Identifier: GPL-2.0

//! The switch's pure code: no `unsafe`, no kernel API beyond fallible
//! allocation, compiled unchanged into the host tests (`tests/host`,
//! against the small `kernel` stand-in in `tools/kernel-shim`), where it is
//! property-tested against reference models with overflow checks on.
//!
//! - [`abi`]: the DM_SWITCH ABI (numbers, layout, packing), shared with the
//!   agent;
//! - [`ptbl`]: the chunked, bit-packed page table (geometry, lookup, windows,
//!   chunk frees, copy-on-write derivation);
//! - [`region`]: sector offset → region index;
//! - [`wire`]: the DM_SWITCH wire format (decoding requests, building replies);
//! - [`dump`]: a table snapshot as the upload windows that recreate it;
//! - [`message`]: the `set_region_mappings` message grammar.

// Shared with the agent, whose public API these items are: the kernel uses
// only part of them.
#[allow(unreachable_pub, dead_code)]
pub(crate) mod abi;
pub(crate) mod dump;
pub(crate) mod message;
pub(crate) mod ptbl;
pub(crate) mod region;
pub(crate) mod wire;
