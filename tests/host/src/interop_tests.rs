//! The agent's encoder against the kernel's decoder, and the kernel's reply
//! encoder against the agent's decoder: both sides compile `pure/abi.rs`,
//! and these tests prove they agree on real bytes.

use crate::abi::{fields_per_word, resp, MAX_WORDS_PER_MSG};
use crate::wire::{Echo, Request, Response};
use dm_switch::wire as agent;
use proptest::prelude::*;

fn header(
    bits: u8,
    devs: u16,
    total: u32,
    offset: u32,
    count: u32,
    userland: [u32; 2],
) -> agent::PgTableHeader {
    agent::PgTableHeader {
        userland,
        dev_major: 253,
        dev_minor: 7,
        page_total: total,
        page_offset: offset,
        page_count: count,
        dev_count: devs,
        pte_bits: bits,
    }
}

proptest! {
    /// Every window the agent can encode, at every wire width, decodes in
    /// the kernel to the same header and the same entries.
    #[test]
    fn agent_windows_decode_in_the_kernel(
        bits in 1u8..=32,
        seed in any::<u64>(),
        words in 1usize..64,
        userland in any::<[u32; 2]>(),
        tail in 0u32..32,
    ) {
        let fpw = fields_per_word(bits);
        let devs = if bits >= 16 { u16::MAX } else { (1u16 << bits).max(1) };
        let count = (words as u32 - 1) * fpw + (tail % fpw) + 1;
        let offset = fpw * (seed % 1000) as u32;
        let total = offset + count + (seed >> 32) as u32 % 100;
        let entries: Vec<u32> = (0..count)
            .map(|i| (seed.rotate_left(i) as u32 ^ i) % u32::from(devs))
            .collect();
        let hdr = header(bits, devs, total, offset, count, userland);
        let bytes = agent::encode_request(&hdr, &agent::pack(&entries, bits)).unwrap();
        let req = Request::parse(&bytes).unwrap();
        // Two compilations of pure/abi.rs, two types: compare every field.
        prop_assert_eq!(format!("{:?}", req.header), format!("{hdr:?}"));
        let got: Vec<(u32, u32)> = req.entries().collect();
        let want: Vec<(u32, u32)> = entries.iter().enumerate().map(|(i, &p)| (offset + i as u32, p)).collect();
        prop_assert_eq!(got, want);
    }

    /// Every reply the kernel builds decodes in the agent: echo, status and
    /// the (truncated) reason.
    #[test]
    fn kernel_replies_decode_in_the_agent(
        userland in any::<[u32; 2]>(),
        major in any::<u32>(),
        minor in any::<u32>(),
        status in 0u32..200,
        why in "[ -~]{0,300}",
    ) {
        let mut r = Response::new(Echo { userland, dev_major: major, dev_minor: minor });
        if status != 0 {
            r.fail(status, format_args!("{why}"));
        }
        let got = agent::decode_response(r.as_bytes()).unwrap();
        let reason: String = if status == 0 { String::new() } else { why.chars().take(255).collect() };
        prop_assert_eq!(got, agent::Response {
            total_len: resp::LEN as u32,
            opcode: 1,
            userland,
            dev_major: major,
            dev_minor: minor,
            status,
            err_str: reason,
        });
    }
}

/// The largest window the agent sends is the largest the kernel takes.
#[test]
fn largest_agent_window_decodes() {
    let bits = 4;
    let count = MAX_WORDS_PER_MSG as u32 * fields_per_word(bits);
    let entries = vec![5u32; count as usize];
    let hdr = header(bits, 16, count, 0, count, [0, 0]);
    let bytes = agent::encode_request(&hdr, &agent::pack(&entries, bits)).unwrap();
    let req = Request::parse(&bytes).unwrap();
    assert_eq!(req.values().filter(|&v| v == 5).count(), count as usize);
}

/// A reply cut short or padded: the agent refuses the one and ignores the
/// padding of the other.
#[test]
fn kernel_reply_truncated_or_padded() {
    let mut r = Response::new(Echo::default());
    r.fail(22, format_args!("Invalid Page Table message: too short"));
    let bytes = r.as_bytes();
    assert!(matches!(
        agent::decode_response(&bytes[..resp::LEN - 1]),
        Err(agent::WireError::TooShort {
            need: 284,
            got: 283,
            ..
        })
    ));
    let mut padded = bytes.to_vec();
    padded.extend_from_slice(&[0; 4]);
    let got = agent::decode_response(&padded).unwrap();
    assert_eq!(
        (got.status, got.err_str.as_str()),
        (22, "Invalid Page Table message: too short")
    );
}
