//! The kernel module's pure modules (`pure/`), compiled on the host from the
//! very files the module is built from, so the host tests test the real code.
#![allow(dead_code)]

#[path = "../../../pure/ptbl.rs"]
pub mod ptbl;

#[path = "../../../pure/region.rs"]
pub mod region;

#[path = "../../../pure/wire.rs"]
pub mod wire;

#[path = "../../../pure/message.rs"]
pub mod message;

#[cfg(test)]
mod message_tests;
#[cfg(test)]
mod ptbl_tests;
#[cfg(test)]
mod region_tests;
#[cfg(test)]
mod wire_tests;
