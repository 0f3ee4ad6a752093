//! Wire decoding (IpcPgTable) and reply encoding (IpcResponse).

use crate::abi::{pg, write_u32};
use crate::ptbl::{min_pte_bits, PageTable};
use crate::wire::{Echo, Request, Response, WireError, RESPONSE_LEN};
use dm_switch::wire as agent;
use proptest::prelude::*;

/// Header fields of a request, for the builder below.
#[derive(Clone)]
struct Hdr {
    opcode: u32,
    userland: [u32; 2],
    major: u32,
    minor: u32,
    total: u32,
    offset: u32,
    count: u32,
    devs: u16,
    bits: u8,
}

impl Default for Hdr {
    fn default() -> Self {
        Hdr {
            opcode: 1,
            userland: [0xdead, 0xbeef],
            major: 253,
            minor: 4,
            total: 100,
            offset: 0,
            count: 0,
            devs: 3,
            bits: 2,
        }
    }
}

/// Packs `values` with the agent's packer (least significant field first,
/// `32 / bits` fields per word, no field straddling two words), as bytes.
fn pack(bits: u8, values: &[u32]) -> Vec<u8> {
    agent::pack(values, bits)
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect()
}

/// A request as the agent encodes it, with `h.opcode` and the raw `packed`
/// bytes (which may be truncated or misaligned) after the header.
fn request(h: &Hdr, packed: &[u8]) -> Vec<u8> {
    let hdr = agent::PgTableHeader {
        userland: h.userland,
        dev_major: h.major,
        dev_minor: h.minor,
        page_total: h.total,
        page_offset: h.offset,
        page_count: h.count,
        dev_count: h.devs,
        pte_bits: h.bits,
    };
    let mut m = agent::encode_request(&hdr, &[]).expect("a header fits");
    m.extend_from_slice(packed);
    let len = m.len() as u32;
    write_u32(&mut m, pg::TOTAL_LEN, len);
    write_u32(&mut m, pg::OPCODE, h.opcode);
    m
}

#[test]
fn decodes_header_fields() {
    let h = Hdr {
        total: 1000,
        offset: 16,
        count: 5,
        ..Hdr::default()
    };
    let msg = request(&h, &pack(2, &[0, 1, 2, 1, 0]));
    let r = Request::parse(&msg).unwrap();
    assert_eq!(
        (r.header.userland, r.header.dev_major, r.header.dev_minor),
        ([0xdead, 0xbeef], 253, 4)
    );
    assert_eq!(
        (
            r.header.page_total,
            r.header.page_offset,
            r.header.page_count,
            r.header.dev_count,
            r.header.pte_bits
        ),
        (1000, 16, 5, 3, 2)
    );
    assert_eq!(
        r.entries().collect::<Vec<_>>(),
        vec![(16, 0), (17, 1), (18, 2), (19, 1), (20, 0)]
    );
}

/// A window of `bits`-bit entries over `devs` paths decodes, and its entries
/// land in a table at `devs`' stored width.
fn round_trip(bits: u8, devs: u32) {
    let count = 2 * 8192 + 5;
    let values: Vec<u32> = (0..count)
        .map(|i: u32| i.wrapping_mul(2_654_435_761).wrapping_add(i) % devs)
        .collect();
    let fields = 32 / u32::from(bits);
    let offset = fields * 7;
    let h = Hdr {
        total: offset + count + 3,
        offset,
        count,
        devs: devs as u16,
        bits,
        ..Hdr::default()
    };
    let msg = request(&h, &pack(bits, &values));
    let r = Request::parse(&msg).unwrap_or_else(|e| panic!("bits {bits}: {e}"));
    let decoded: Vec<u32> = r.values().collect();
    assert_eq!(decoded, values, "bits {bits}");
    let mut t = PageTable::empty(devs, h.total, bits).unwrap();
    t.set_entries(r.entries()).unwrap();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(
            t.lookup(u64::from(offset) + i as u64),
            Some(*v),
            "bits {bits} devs {devs} entry {i}"
        );
    }
    assert_eq!(
        t.lookup(u64::from(offset + count)),
        Some(0),
        "same chunk, not in window: path 0"
    );
}

/// Every wire `pte_bits` (1..=32) into every stored width (1..=16 bits, at
/// the fewest and the most paths of that width).
#[test]
fn every_pte_bits_round_trips_into_every_stored_width() {
    for stored in 1u32..=16 {
        let most = (1u32 << stored).min(65535);
        let fewest = (1u32 << (stored - 1)) + 1;
        for devs in [fewest, most] {
            assert_eq!(u32::from(min_pte_bits(devs)), stored);
            for bits in stored as u8..=32 {
                round_trip(bits, devs);
            }
        }
    }
}

#[test]
fn partial_last_word_leaves_following_entries() {
    // Window of 3 four-bit entries: the last word's 5 unused fields are junk
    // in the message and must not clobber regions 3.. of the table.
    let mut t = PageTable::round_robin(16, 64).unwrap();
    let mut packed = pack(4, &[9, 9, 9]);
    packed[1] |= 0xf0; // junk in field 3
    let msg = request(
        &Hdr {
            total: 64,
            count: 3,
            devs: 16,
            bits: 4,
            ..Hdr::default()
        },
        &packed,
    );
    t.set_entries(Request::parse(&msg).unwrap().entries())
        .unwrap();
    assert_eq!(
        (0..8).map(|r| t.lookup(r).unwrap()).collect::<Vec<_>>(),
        vec![9, 9, 9, 3, 4, 5, 6, 7]
    );
}

#[test]
fn window_ending_at_the_last_region_of_the_largest_table() {
    // page_total = u32::MAX, a window across the last two chunks up to region
    // u32::MAX - 1. The kernel decoded it with an open range that stepped
    // past u32::MAX after the last entry: an overflow panic, an oops (found
    // by the netlink fuzzer).
    let (offset, count) = (0xFFFF_E000 - 16, 0x1FFF + 16);
    let values: Vec<u32> = (0..count).map(|i| i % 3).collect();
    let h = Hdr {
        total: u32::MAX,
        offset,
        count,
        ..Hdr::default()
    };
    let msg = request(&h, &pack(2, &values));
    let r = Request::parse(&msg).unwrap();
    let entries: Vec<(u32, u32)> = r.entries().collect();
    assert_eq!(entries.len(), count as usize);
    assert_eq!(entries.last(), Some(&(u32::MAX - 1, (count - 1) % 3)));
    let mut t = PageTable::empty(3, u32::MAX, 2).unwrap();
    t.set_entries(r.entries()).unwrap();
    assert_eq!(t.lookup(u64::from(u32::MAX - 1)), Some((count - 1) % 3));
    assert_eq!(t.lookup(u64::from(offset)), Some(0));
    assert_eq!(t.lookup(u64::from(u32::MAX)), None);
}

#[test]
fn refusals() {
    let ok = Hdr {
        total: 100,
        offset: 16,
        count: 4,
        ..Hdr::default()
    };
    let body = pack(2, &[1, 1, 1, 1]);
    let cases: Vec<(Vec<u8>, WireError)> = vec![
        (vec![0; 39], WireError::TooShort(39)),
        (
            request(
                &Hdr {
                    opcode: 2,
                    ..ok.clone()
                },
                &body,
            ),
            WireError::BadOpcode(2),
        ),
        (
            request(
                &Hdr {
                    bits: 0,
                    ..ok.clone()
                },
                &body,
            ),
            WireError::BadPteBits(0),
        ),
        (
            request(
                &Hdr {
                    bits: 33,
                    ..ok.clone()
                },
                &body,
            ),
            WireError::BadPteBits(33),
        ),
        (
            request(
                &Hdr {
                    bits: 1,
                    devs: 3,
                    ..ok.clone()
                },
                &body,
            ),
            WireError::PteBitsTooNarrow(1, 3),
        ),
        (
            request(
                &Hdr {
                    devs: 0,
                    ..ok.clone()
                },
                &body,
            ),
            WireError::NoDevices,
        ),
        (
            request(
                &Hdr {
                    offset: 17,
                    ..ok.clone()
                },
                &body,
            ),
            WireError::Unaligned(17, 16),
        ),
        (
            request(
                &Hdr {
                    offset: 96,
                    count: 5,
                    ..ok.clone()
                },
                &body,
            ),
            WireError::PastEnd(96, 5, 100),
        ),
        (
            request(
                &Hdr {
                    offset: 0xffff_fff0,
                    count: 0x20,
                    total: 0xffff_ffff,
                    ..ok.clone()
                },
                &body,
            ),
            WireError::PastEnd(0xffff_fff0, 0x20, 0xffff_ffff),
        ),
        (
            request(
                &Hdr {
                    count: 17,
                    ..ok.clone()
                },
                &body,
            ),
            WireError::Truncated(8, 4),
        ),
        (
            request(
                &Hdr {
                    count: 0,
                    offset: 16,
                    ..ok.clone()
                },
                &[],
            ),
            WireError::UnalignedFree(16),
        ),
    ];
    for (msg, want) in cases {
        assert_eq!(Request::parse(&msg).unwrap_err(), want);
        assert!(!want.to_string().is_empty());
    }
    // 32-bit pte_bits fit any dev_count; a chunk-aligned free is fine.
    assert!(Request::parse(&request(
        &Hdr {
            bits: 32,
            devs: 65535,
            ..ok.clone()
        },
        &[0; 16]
    ))
    .is_ok());
    assert!(Request::parse(&request(
        &Hdr {
            count: 0,
            offset: 8192,
            total: 9000,
            ..ok.clone()
        },
        &[]
    ))
    .is_ok());
    // total_len is informational: a lie does not matter.
    let mut m = request(&ok, &body);
    m[0..4].copy_from_slice(&7u32.to_ne_bytes());
    assert!(Request::parse(&m).is_ok());
}

#[test]
fn response_layout() {
    let mut r = Response::new(Echo {
        userland: [1, 2],
        dev_major: 253,
        dev_minor: 9,
    });
    let b = r.as_bytes();
    let word = |b: &[u8; RESPONSE_LEN], i: usize| {
        u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().unwrap())
    };
    assert_eq!(
        [
            word(b, 0),
            word(b, 1),
            word(b, 2),
            word(b, 3),
            word(b, 4),
            word(b, 5),
            word(b, 6)
        ],
        [284, 1, 1, 2, 253, 9, 0]
    );
    r.fail(22, format_args!("{}", "x".repeat(400)));
    let b = r.as_bytes();
    assert_eq!(word(b, 6), 22);
    assert!(b[28..28 + 255].iter().all(|&c| c == b'x'));
    assert_eq!(b[283], 0, "err_str stays NUL-terminated");
    let echo = Echo::of(&[1, 2, 3]);
    assert_eq!(
        (echo.dev_major, echo.userland),
        (0, [0, 0]),
        "short request echoes zeros"
    );
}

proptest! {
    /// Arbitrary bytes never panic the decoder, and whatever it accepts has
    /// exactly page_count entries within range.
    #[test]
    fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(r) = Request::parse(&bytes) {
            prop_assert_eq!(r.values().count(), r.header.page_count as usize);
            let mask = u64::MAX >> (64 - u32::from(r.header.pte_bits));
            prop_assert!(r.values().all(|v| u64::from(v) <= mask));
        }
    }
}

/// A field a short request holds only part of reads as 0: the kernel echoes
/// it as absent, which is what the fuzzer's reference model predicts.
#[test]
fn partial_fields_echo_as_zero() {
    let m = [0xffu8; 18];
    let e = Echo::of(&m[..10]);
    assert_eq!((e.userland, e.dev_major), ([0, 0], 0));
    let e = Echo::of(&m);
    assert_eq!(
        (e.userland, e.dev_major, e.dev_minor),
        ([u32::MAX; 2], 0, 0)
    );
}
