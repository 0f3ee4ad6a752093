//! The dm-switch generic-netlink wire format, defined once.
//!
//! This module mirrors `include/uapi/dm-switch.h` (the contract with the
//! kernel module): the family name and numbers, the 40-byte `IpcPgTable`
//! request header followed by packed page-table words, and the 284-byte
//! `IpcResponse` reply. Every field is read and written at an explicit byte
//! offset in host (little-endian on x86_64) order; nothing is cast.
//!
//! The unit test `c_header_layout_matches` compiles a small C program against
//! the header and checks every offset and size below against the C compiler.

use std::fmt;

/// Generic-netlink family name (`DM_SWITCH_GENL_NAME`).
pub const FAMILY_NAME: &str = "DM_SWITCH";
/// Generic-netlink family version (`DM_SWITCH_GENL_VERSION`).
pub const FAMILY_VERSION: u8 = 1;
/// `NETLINK_CMD_GET_PAGE_TBL`: the only command.
pub const CMD_GET_PAGE_TBL: u8 = 1;
/// `NETLINK_ATTR_MSG`: the request attribute holding an `IpcPgTable`.
pub const ATTR_MSG: u16 = 1;
/// `DM_SWITCH_ATTR_RESPONSE`: the reply attribute holding an `IpcResponse`.
pub const ATTR_RESPONSE: u16 = 11;
/// `OPCODE_PAGE_TABLE_UPLOAD`.
pub const OPCODE_PAGE_TABLE_UPLOAD: u32 = 1;

/// `CHUNK_PTE_COUNT`: entries per kernel chunk (`1 << CHUNK_PTE_SHIFT`).
pub const CHUNK_PTE_COUNT: u32 = 1 << 13;
/// `MAX_IPC_MSG_LEN`: largest `NETLINK_ATTR_MSG` payload in bytes.
pub const MAX_IPC_MSG_LEN: usize = 65480;
/// `MAX_ERR_STR_LEN`: longest `err_str` without its NUL.
pub const MAX_ERR_STR_LEN: usize = 255;

/// Byte offsets and length of `struct IpcPgTable`.
pub mod pg {
    /// `total_len` (u32).
    pub const TOTAL_LEN: usize = 0;
    /// `opcode` (u32).
    pub const OPCODE: usize = 4;
    /// `userland[0]` (u32); `userland[1]` follows at +4.
    pub const USERLAND: usize = 8;
    /// `dev_major` (u32).
    pub const DEV_MAJOR: usize = 16;
    /// `dev_minor` (u32).
    pub const DEV_MINOR: usize = 20;
    /// `page_total` (u32).
    pub const PAGE_TOTAL: usize = 24;
    /// `page_offset` (u32).
    pub const PAGE_OFFSET: usize = 28;
    /// `page_count` (u32).
    pub const PAGE_COUNT: usize = 32;
    /// `dev_count` (u16).
    pub const DEV_COUNT: usize = 36;
    /// `pte_bits` (u8).
    pub const PTE_BITS: usize = 38;
    /// `reserved` (u8).
    pub const RESERVED: usize = 39;
    /// `ptbl_buff` (u32 words), i.e. `IPC_PG_TABLE_HDR_LEN`.
    pub const PTBL_BUFF: usize = 40;
    /// Bytes before `ptbl_buff`.
    pub const HDR_LEN: usize = 40;
}

/// Byte offsets and length of `struct IpcResponse`.
pub mod resp {
    /// `total_len` (u32).
    pub const TOTAL_LEN: usize = 0;
    /// `opcode` (u32).
    pub const OPCODE: usize = 4;
    /// `userland[0]` (u32); `userland[1]` follows at +4.
    pub const USERLAND: usize = 8;
    /// `dev_major` (u32).
    pub const DEV_MAJOR: usize = 16;
    /// `dev_minor` (u32).
    pub const DEV_MINOR: usize = 20;
    /// `status` (u32).
    pub const STATUS: usize = 24;
    /// `err_str` (char[256]).
    pub const ERR_STR: usize = 28;
    /// Size of `err_str`, NUL included.
    pub const ERR_STR_SIZE: usize = super::MAX_ERR_STR_LEN + 1;
    /// `sizeof(struct IpcResponse)`.
    pub const LEN: usize = 284;
}

/// Most packed words one request can carry: `(65480 - 40) / 4` = 16360.
pub const MAX_WORDS_PER_MSG: usize = (MAX_IPC_MSG_LEN - pg::HDR_LEN) / 4;

/// Entries of `pte_bits` bits held by one u32 word (fields never straddle).
///
/// `pte_bits` must be in 1..=32.
pub fn fields_per_word(pte_bits: u8) -> u32 {
    debug_assert!((1..=32).contains(&pte_bits));
    32 / u32::from(pte_bits.clamp(1, 32))
}

/// Words needed for `count` entries of `pte_bits` bits.
pub fn words_for(count: u64, pte_bits: u8) -> u64 {
    count.div_ceil(u64::from(fields_per_word(pte_bits)))
}

/// Mask of one field of `pte_bits` bits.
pub fn field_mask(pte_bits: u8) -> u32 {
    if pte_bits >= 32 {
        u32::MAX
    } else {
        (1u32 << pte_bits) - 1
    }
}

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

/// The fixed part of one `IpcPgTable` request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PgTableHeader {
    /// Opaque words the kernel shows in `dmsetup status`.
    pub userland: [u32; 2],
    /// Major number of the DM device.
    pub dev_major: u32,
    /// Minor number of the DM device.
    pub dev_minor: u32,
    /// Regions in the whole table.
    pub page_total: u32,
    /// First region of this window (a multiple of the fields per word).
    pub page_offset: u32,
    /// Regions in this window (0 with a chunk-aligned offset frees a chunk).
    pub page_count: u32,
    /// Number of paths of the target.
    pub dev_count: u16,
    /// Bits per entry, 1..=32.
    pub pte_bits: u8,
}

fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(buf: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[off..off + 4]);
    u32::from_ne_bytes(b)
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
    put_u32(&mut buf, pg::TOTAL_LEN, len as u32);
    put_u32(&mut buf, pg::OPCODE, OPCODE_PAGE_TABLE_UPLOAD);
    put_u32(&mut buf, pg::USERLAND, hdr.userland[0]);
    put_u32(&mut buf, pg::USERLAND + 4, hdr.userland[1]);
    put_u32(&mut buf, pg::DEV_MAJOR, hdr.dev_major);
    put_u32(&mut buf, pg::DEV_MINOR, hdr.dev_minor);
    put_u32(&mut buf, pg::PAGE_TOTAL, hdr.page_total);
    put_u32(&mut buf, pg::PAGE_OFFSET, hdr.page_offset);
    put_u32(&mut buf, pg::PAGE_COUNT, hdr.page_count);
    buf[pg::DEV_COUNT..pg::DEV_COUNT + 2].copy_from_slice(&hdr.dev_count.to_ne_bytes());
    buf[pg::PTE_BITS] = hdr.pte_bits;
    buf[pg::RESERVED] = 0;
    for (i, w) in words.iter().enumerate() {
        put_u32(&mut buf, pg::PTBL_BUFF + 4 * i, *w);
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
    Ok(PgTableHeader {
        userland: [get_u32(buf, pg::USERLAND), get_u32(buf, pg::USERLAND + 4)],
        dev_major: get_u32(buf, pg::DEV_MAJOR),
        dev_minor: get_u32(buf, pg::DEV_MINOR),
        page_total: get_u32(buf, pg::PAGE_TOTAL),
        page_offset: get_u32(buf, pg::PAGE_OFFSET),
        page_count: get_u32(buf, pg::PAGE_COUNT),
        dev_count: u16::from_ne_bytes([buf[pg::DEV_COUNT], buf[pg::DEV_COUNT + 1]]),
        pte_bits: buf[pg::PTE_BITS],
    })
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
        total_len: get_u32(buf, resp::TOTAL_LEN),
        opcode: get_u32(buf, resp::OPCODE),
        userland: [
            get_u32(buf, resp::USERLAND),
            get_u32(buf, resp::USERLAND + 4),
        ],
        dev_major: get_u32(buf, resp::DEV_MAJOR),
        dev_minor: get_u32(buf, resp::DEV_MINOR),
        status: get_u32(buf, resp::STATUS),
        err_str: String::from_utf8_lossy(&raw[..end]).into_owned(),
    })
}

/// Encodes an `IpcResponse` (what the kernel sends; used by tests).
pub fn encode_response(r: &Response) -> Vec<u8> {
    let mut buf = vec![0u8; resp::LEN];
    put_u32(&mut buf, resp::TOTAL_LEN, r.total_len);
    put_u32(&mut buf, resp::OPCODE, r.opcode);
    put_u32(&mut buf, resp::USERLAND, r.userland[0]);
    put_u32(&mut buf, resp::USERLAND + 4, r.userland[1]);
    put_u32(&mut buf, resp::DEV_MAJOR, r.dev_major);
    put_u32(&mut buf, resp::DEV_MINOR, r.dev_minor);
    put_u32(&mut buf, resp::STATUS, r.status);
    let s = r.err_str.as_bytes();
    let n = s.len().min(MAX_ERR_STR_LEN);
    buf[resp::ERR_STR..resp::ERR_STR + n].copy_from_slice(&s[..n]);
    buf
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
    use std::path::PathBuf;
    use std::process::Command;

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
    fn response_round_trip_and_offsets() {
        let r = Response {
            total_len: 284,
            opcode: 1,
            userland: [5, 6],
            dev_major: 253,
            dev_minor: 1,
            status: 22,
            err_str: "Invalid Page Table message: too short".into(),
        };
        let buf = encode_response(&r);
        assert_eq!(buf.len(), 284);
        assert_eq!(&buf[24..28], &22u32.to_le_bytes());
        assert_eq!(&buf[28..32], b"Inva");
        assert_eq!(decode_response(&buf).unwrap(), r);
    }

    #[test]
    fn response_err_str_without_nul_and_short_buffer() {
        let mut buf = vec![b'x'; resp::LEN];
        buf[..28].fill(0);
        let r = decode_response(&buf).unwrap();
        assert_eq!(r.err_str.len(), 256);
        assert_eq!(r.status, 0);
        assert!(matches!(
            decode_response(&buf[..283]),
            Err(WireError::TooShort {
                need: 284,
                got: 283,
                ..
            })
        ));
        // Trailing bytes (attribute padding) are ignored.
        let mut longer = encode_response(&Response::default());
        longer.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(decode_response(&longer).unwrap(), Response::default());
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

    /// Compiles a C program against the UAPI header and checks the layout.
    #[test]
    fn c_header_layout_matches() {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let header = manifest.join("../../include/uapi/dm-switch.h");
        assert!(header.exists(), "missing {}", header.display());
        let dir = std::env::temp_dir().join(format!("dm-switch-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("layout.c");
        let exe = dir.join("layout");
        let program = r#"
#include <stdio.h>
#include <stddef.h>
#include "dm-switch.h"
#define O(s, f) printf(#s "." #f " %zu\n", offsetof(struct s, f))
int main(void) {
    O(IpcPgTable, total_len); O(IpcPgTable, opcode); O(IpcPgTable, userland);
    O(IpcPgTable, dev_major); O(IpcPgTable, dev_minor); O(IpcPgTable, page_total);
    O(IpcPgTable, page_offset); O(IpcPgTable, page_count); O(IpcPgTable, dev_count);
    O(IpcPgTable, pte_bits); O(IpcPgTable, reserved); O(IpcPgTable, ptbl_buff);
    O(IpcResponse, total_len); O(IpcResponse, opcode); O(IpcResponse, userland);
    O(IpcResponse, dev_major); O(IpcResponse, dev_minor); O(IpcResponse, status);
    O(IpcResponse, err_str);
    printf("sizeof.IpcResponse %zu\n", sizeof(struct IpcResponse));
    printf("sizeof.err_str %zu\n", sizeof(((struct IpcResponse *)0)->err_str));
    printf("sizeof.dev_count %zu\n", sizeof(((struct IpcPgTable *)0)->dev_count));
    printf("sizeof.pte_bits %zu\n", sizeof(((struct IpcPgTable *)0)->pte_bits));
    printf("sizeof.userland %zu\n", sizeof(((struct IpcPgTable *)0)->userland));
    printf("const.IPC_PG_TABLE_HDR_LEN %d\n", IPC_PG_TABLE_HDR_LEN);
    printf("const.MAX_IPC_MSG_LEN %d\n", MAX_IPC_MSG_LEN);
    printf("const.MAX_ERR_STR_LEN %d\n", MAX_ERR_STR_LEN);
    printf("const.CHUNK_PTE_COUNT %lld\n", (long long)CHUNK_PTE_COUNT);
    printf("const.DM_SWITCH_GENL_VERSION %d\n", DM_SWITCH_GENL_VERSION);
    printf("const.NETLINK_CMD_GET_PAGE_TBL %d\n", NETLINK_CMD_GET_PAGE_TBL);
    printf("const.NETLINK_ATTR_MSG %d\n", NETLINK_ATTR_MSG);
    printf("const.DM_SWITCH_ATTR_RESPONSE %d\n", DM_SWITCH_ATTR_RESPONSE);
    printf("const.OPCODE_PAGE_TABLE_UPLOAD %d\n", OPCODE_PAGE_TABLE_UPLOAD);
    printf("name %s\n", DM_SWITCH_GENL_NAME);
    return 0;
}
"#;
        std::fs::write(&src, program).unwrap();
        let include_dir = header.parent().unwrap();
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let status = Command::new(&cc)
            .arg("-Wall")
            .arg("-Werror")
            .arg("-I")
            .arg(include_dir)
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
        assert!(status.success(), "{cc} failed to compile the layout probe");
        let out = Command::new(&exe).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let _ = std::fs::remove_dir_all(&dir);

        let expected: Vec<(&str, String)> = vec![
            ("IpcPgTable.total_len", pg::TOTAL_LEN.to_string()),
            ("IpcPgTable.opcode", pg::OPCODE.to_string()),
            ("IpcPgTable.userland", pg::USERLAND.to_string()),
            ("IpcPgTable.dev_major", pg::DEV_MAJOR.to_string()),
            ("IpcPgTable.dev_minor", pg::DEV_MINOR.to_string()),
            ("IpcPgTable.page_total", pg::PAGE_TOTAL.to_string()),
            ("IpcPgTable.page_offset", pg::PAGE_OFFSET.to_string()),
            ("IpcPgTable.page_count", pg::PAGE_COUNT.to_string()),
            ("IpcPgTable.dev_count", pg::DEV_COUNT.to_string()),
            ("IpcPgTable.pte_bits", pg::PTE_BITS.to_string()),
            ("IpcPgTable.reserved", pg::RESERVED.to_string()),
            ("IpcPgTable.ptbl_buff", pg::PTBL_BUFF.to_string()),
            ("IpcResponse.total_len", resp::TOTAL_LEN.to_string()),
            ("IpcResponse.opcode", resp::OPCODE.to_string()),
            ("IpcResponse.userland", resp::USERLAND.to_string()),
            ("IpcResponse.dev_major", resp::DEV_MAJOR.to_string()),
            ("IpcResponse.dev_minor", resp::DEV_MINOR.to_string()),
            ("IpcResponse.status", resp::STATUS.to_string()),
            ("IpcResponse.err_str", resp::ERR_STR.to_string()),
            ("sizeof.IpcResponse", resp::LEN.to_string()),
            ("sizeof.err_str", resp::ERR_STR_SIZE.to_string()),
            ("sizeof.dev_count", "2".into()),
            ("sizeof.pte_bits", "1".into()),
            ("sizeof.userland", "8".into()),
            ("const.IPC_PG_TABLE_HDR_LEN", pg::HDR_LEN.to_string()),
            ("const.MAX_IPC_MSG_LEN", MAX_IPC_MSG_LEN.to_string()),
            ("const.MAX_ERR_STR_LEN", MAX_ERR_STR_LEN.to_string()),
            ("const.CHUNK_PTE_COUNT", CHUNK_PTE_COUNT.to_string()),
            ("const.DM_SWITCH_GENL_VERSION", FAMILY_VERSION.to_string()),
            (
                "const.NETLINK_CMD_GET_PAGE_TBL",
                CMD_GET_PAGE_TBL.to_string(),
            ),
            ("const.NETLINK_ATTR_MSG", ATTR_MSG.to_string()),
            ("const.DM_SWITCH_ATTR_RESPONSE", ATTR_RESPONSE.to_string()),
            (
                "const.OPCODE_PAGE_TABLE_UPLOAD",
                OPCODE_PAGE_TABLE_UPLOAD.to_string(),
            ),
            ("name", FAMILY_NAME.to_string()),
        ];
        for (key, want) in &expected {
            let got = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key} ")))
                .unwrap_or_else(|| panic!("probe printed no {key}"));
            assert_eq!(got, want, "{key}: C says {got}, Rust says {want}");
        }
        assert_eq!(text.lines().count(), expected.len());
        // The brief's fixed points, stated outright.
        assert_eq!(pg::PTBL_BUFF, 40);
        assert_eq!(resp::LEN, 284);
    }
}
