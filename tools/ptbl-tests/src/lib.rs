//! The kernel module's pure modules, compiled on the host from the very
//! files the module is built from, so the host tests test the real code.
#![allow(dead_code)]

#[path = "../../../ptbl.rs"]
pub mod ptbl;

#[path = "../../../wire.rs"]
pub mod wire;

#[path = "../../../message.rs"]
pub mod message;

#[cfg(test)]
mod message_tests;
#[cfg(test)]
mod ptbl_tests;
#[cfg(test)]
mod wire_tests;
