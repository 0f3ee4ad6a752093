//! The dm-switch generic-netlink wire format, as the agent encodes it.
//!
//! The ABI itself (numbers, the byte layout of `IpcPgTable` and
//! `IpcResponse`, entry packing, limits) is the kernel module's own
//! `pure/abi.rs`, compiled here as [`abi`] and re-exported: it is defined
//! once, and a host test (`tests/host`) checks it against
//! `include/uapi/dm-switch.h` with a C compiler and feeds what this module
//! encodes to the kernel's decoder. Every field is written at an explicit
//! byte offset in host order; nothing is cast.

use std::fmt;

#[path = "../../../pure/abi.rs"]
pub mod abi;
pub use abi::*;

/// The kernel's half of the format (decoding requests, encoding replies),
/// compiled from the module's own `pure/wire.rs`, so that tests can play the
/// kernel without a second encoder.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../pure/wire.rs"]
pub(crate) mod kernel;

/// Reads entry `index` from packed `words` (least-significant field first).
pub fn get_field(words: &[u32], pte_bits: u8, index: u64) -> u32 {
    let fpw = u64::from(fields_per_word(pte_bits));
    let word = words[(index / fpw) as usize];
    let shift = (index % fpw) as u32 * u32::from(pte_bits);
    (word >> shift) & field_mask(pte_bits)
}

/// Writes entry `index` into packed `words`; `value` is masked to the field.
pub fn set_field(words: &mut [u32], pte_bits: u8, index: u64, value: u32) {
    let fpw = u64::from(fields_per_word(pte_bits));
    let mask = field_mask(pte_bits);
    let shift = (index % fpw) as u32 * u32::from(pte_bits);
    let word = &mut words[(index / fpw) as usize];
    *word = (*word & !(mask << shift)) | ((value & mask) << shift);
}

/// Packs `entries` into words of `pte_bits`-bit fields; the unused fields of
/// a partial last word are zero.
pub fn pack(entries: &[u32], pte_bits: u8) -> Vec<u32> {
    let mut words = vec![0u32; words_for(entries.len() as u64, pte_bits) as usize];
    for (i, &e) in entries.iter().enumerate() {
        set_field(&mut words, pte_bits, i as u64, e);
    }
    words
}

/// Unpacks the first `count` entries of `words`.
pub fn unpack(words: &[u32], pte_bits: u8, count: u64) -> Vec<u32> {
    (0..count).map(|i| get_field(words, pte_bits, i)).collect()
}

/// Encodes one request: the 40-byte header then `words`, the packed entries
/// of the window. The result is the `NETLINK_ATTR_MSG` payload.
///
/// Fails if the payload would exceed [`MAX_IPC_MSG_LEN`].
pub fn encode_request(hdr: &PgTableHeader, words: &[u32]) -> Result<Vec<u8>, WireError> {
    let len = pg::HDR_LEN + 4 * words.len();
    if len > MAX_IPC_MSG_LEN {
        return Err(WireError::TooLong(len));
    }
    let mut buf = vec![0u8; len];
    write_u32(&mut buf, pg::TOTAL_LEN, len as u32);
    write_u32(&mut buf, pg::OPCODE, OPCODE_PAGE_TABLE_UPLOAD);
    hdr.write(&mut buf);
    for (i, w) in words.iter().enumerate() {
        write_u32(&mut buf, pg::PTBL_BUFF + 4 * i, *w);
    }
    Ok(buf)
}

/// Decodes the header of an encoded request (the inverse of
/// [`encode_request`] for the fixed part; used by tests and `--dry-run`).
pub fn decode_request_header(buf: &[u8]) -> Result<PgTableHeader, WireError> {
    if buf.len() < pg::HDR_LEN {
        return Err(WireError::TooShort {
            what: "IpcPgTable",
            need: pg::HDR_LEN,
            got: buf.len(),
        });
    }
    Ok(PgTableHeader::read(buf))
}

/// A decoded `IpcResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// `total_len` as sent (284).
    pub total_len: u32,
    /// Echoed opcode.
    pub opcode: u32,
    /// Echoed userland words.
    pub userland: [u32; 2],
    /// Echoed major.
    pub dev_major: u32,
    /// Echoed minor.
    pub dev_minor: u32,
    /// 0 on success, else a positive errno.
    pub status: u32,
    /// The reason, up to the first NUL (lossily decoded as UTF-8).
    pub err_str: String,
}

/// Decodes an `IpcResponse` from the reply attribute's payload.
pub fn decode_response(buf: &[u8]) -> Result<Response, WireError> {
    if buf.len() < resp::LEN {
        return Err(WireError::TooShort {
            what: "IpcResponse",
            need: resp::LEN,
            got: buf.len(),
        });
    }
    let raw = &buf[resp::ERR_STR..resp::ERR_STR + resp::ERR_STR_SIZE];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    Ok(Response {
        total_len: read_u32(buf, resp::TOTAL_LEN),
        opcode: read_u32(buf, resp::OPCODE),
        userland: [
            read_u32(buf, resp::USERLAND),
            read_u32(buf, resp::USERLAND + 4),
        ],
        dev_major: read_u32(buf, resp::DEV_MAJOR),
        dev_minor: read_u32(buf, resp::DEV_MINOR),
        status: read_u32(buf, resp::STATUS),
        err_str: String::from_utf8_lossy(&raw[..end]).into_owned(),
    })
}

/// A message that cannot be encoded or decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    /// An encoded request would exceed [`MAX_IPC_MSG_LEN`].
    TooLong(usize),
    /// A buffer is shorter than the structure it should hold.
    TooShort {
        /// Structure name.
        what: &'static str,
        /// Bytes required.
        need: usize,
        /// Bytes present.
        got: usize,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLong(n) => write!(
                f,
                "request payload of {n} bytes exceeds the {MAX_IPC_MSG_LEN}-byte limit"
            ),
            WireError::TooShort { what, need, got } => {
                write!(f, "{what} too short: {got} bytes, need {need}")
            }
        }
    }
}

impl std::error::Error for WireError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_header_offsets_and_round_trip() {
        let hdr = PgTableHeader {
            userland: [0x1122_3344, 0x5566_7788],
            dev_major: 253,
            dev_minor: 7,
            page_total: 1_000_000,
            page_offset: 32 * 16360,
            page_count: 12345,
            dev_count: 3,
            pte_bits: 2,
        };
        let words = [0xdead_beefu32, 1, 2];
        let buf = encode_request(&hdr, &words).unwrap();
        assert_eq!(buf.len(), 40 + 12);
        assert_eq!(&buf[0..4], &52u32.to_le_bytes());
        assert_eq!(&buf[4..8], &1u32.to_le_bytes());
        assert_eq!(&buf[8..12], &0x1122_3344u32.to_le_bytes());
        assert_eq!(&buf[12..16], &0x5566_7788u32.to_le_bytes());
        assert_eq!(&buf[16..20], &253u32.to_le_bytes());
        assert_eq!(&buf[20..24], &7u32.to_le_bytes());
        assert_eq!(&buf[24..28], &1_000_000u32.to_le_bytes());
        assert_eq!(&buf[28..32], &(32u32 * 16360).to_le_bytes());
        assert_eq!(&buf[32..36], &12345u32.to_le_bytes());
        assert_eq!(&buf[36..38], &3u16.to_le_bytes());
        assert_eq!(buf[38], 2);
        assert_eq!(buf[39], 0);
        assert_eq!(&buf[40..44], &0xdead_beefu32.to_le_bytes());
        assert_eq!(&buf[48..52], &2u32.to_le_bytes());
        assert_eq!(decode_request_header(&buf).unwrap(), hdr);
    }

    #[test]
    fn request_size_limit() {
        let hdr = PgTableHeader::default();
        let max = vec![0u32; MAX_WORDS_PER_MSG];
        assert_eq!(MAX_WORDS_PER_MSG, 16360);
        assert_eq!(encode_request(&hdr, &max).unwrap().len(), MAX_IPC_MSG_LEN);
        let over = vec![0u32; MAX_WORDS_PER_MSG + 1];
        assert_eq!(
            encode_request(&hdr, &over),
            Err(WireError::TooLong(MAX_IPC_MSG_LEN + 4))
        );
        // A chunk-free window carries the header alone.
        assert_eq!(encode_request(&hdr, &[]).unwrap().len(), 40);
    }

    #[test]
    fn pack_round_trip_every_width() {
        for bits in 1u8..=32 {
            let fpw = fields_per_word(bits);
            assert_eq!(fpw, 32 / u32::from(bits));
            let mask = field_mask(bits);
            // A count that leaves a partial last word whenever fpw > 1.
            let count = (fpw * 3 + fpw.saturating_sub(1)).max(1) as usize;
            let entries: Vec<u32> = (0..count)
                .map(|i| (i as u32).wrapping_mul(2_654_435_761) & mask)
                .collect();
            let words = pack(&entries, bits);
            assert_eq!(
                words.len() as u64,
                words_for(count as u64, bits),
                "bits {bits}"
            );
            assert_eq!(unpack(&words, bits, count as u64), entries, "bits {bits}");
            // Least-significant field first.
            assert_eq!(words[0] & mask, entries[0], "bits {bits}");
            // Unused fields of the last word are zero.
            let used = count as u32 - (words.len() as u32 - 1) * fpw;
            let used_bits = used * u32::from(bits);
            if used_bits < 32 {
                assert_eq!(words[words.len() - 1] >> used_bits, 0, "bits {bits}");
            }
        }
    }

    #[test]
    fn pack_known_patterns() {
        // 1 bit: entries 1,0,1,1 -> 0b1101.
        assert_eq!(pack(&[1, 0, 1, 1], 1), vec![0b1101]);
        // 2 bits: 0,1,2,3 -> 0b11_10_01_00.
        assert_eq!(pack(&[0, 1, 2, 3], 2), vec![0b1110_0100]);
        // 3 bits: 10 fields per word, the 11th goes to the next word.
        let e: Vec<u32> = (0..11).map(|i| i % 8).collect();
        let w = pack(&e, 3);
        assert_eq!(w.len(), 2);
        assert_eq!(w[1], 2); // entry 10 = 10 % 8
        assert_eq!(w[0] >> 30, 0); // bits 30..31 unused
                                   // 32 bits: one entry per word.
        assert_eq!(pack(&[u32::MAX, 7], 32), vec![u32::MAX, 7]);
        // Values are masked to the field.
        assert_eq!(pack(&[0xff], 4), vec![0xf]);
    }
}
