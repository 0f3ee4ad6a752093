//! Host tests of the kernel module's pure modules (`pure/`), compiled on the
//! host from the very files the module is built from, so the tests test the
//! real code; and of the agent's encoder against the kernel's decoder.
//! One file of tests per module: `abi_tests`, `ptbl_tests`, `region_tests`,
//! `wire_tests` (the kernel's decoder and replies), `message_tests`, and
//! `interop_tests` (agent ↔ kernel bytes).
#![allow(dead_code)]

#[path = "../../../pure/abi.rs"]
pub mod abi;

#[path = "../../../pure/ptbl.rs"]
pub mod ptbl;

#[path = "../../../pure/region.rs"]
pub mod region;

#[path = "../../../pure/wire.rs"]
pub mod wire;

#[path = "../../../pure/dump.rs"]
pub mod dump;

#[path = "../../../pure/message.rs"]
pub mod message;

#[cfg(test)]
mod abi_tests;
#[cfg(test)]
mod dump_tests;
#[cfg(test)]
mod interop_tests;
#[cfg(test)]
mod message_tests;
#[cfg(test)]
mod ptbl_tests;
#[cfg(test)]
mod region_tests;
#[cfg(test)]
mod wire_tests;
