//! `set_region_mappings` parsing and application.

use crate::message::{apply, MessageError};
use crate::ptbl::PageTable;

fn run(devs: u32, total: u32, msg: &str) -> Result<PageTable, MessageError> {
    let mut t = PageTable::empty(devs, total, 2).unwrap();
    let mut e = t.edit();
    apply(&mut e, msg.split_whitespace().map(str::as_bytes))?;
    e.finish().unwrap();
    Ok(t)
}

#[test]
fn index_colon_and_repeat() {
    let t = run(3, 100, "0:1 :2 R2,3 a:0 :1").unwrap();
    let got: Vec<_> = (0..12).map(|r| t.lookup(r)).collect();
    // 0:1 1:2, then R2,3 copies the last two entries three times: 2:1 3:2 4:1.
    assert_eq!(&got[..5], &[Some(1), Some(2), Some(1), Some(2), Some(1)]);
    assert_eq!(t.lookup(10), Some(0));
    assert_eq!(t.lookup(11), Some(1));
    assert_eq!(t.lookup(5), Some(0), "allocated chunk, unwritten: path 0");
}

#[test]
fn repeat_cycle_of_one() {
    let t = run(4, 50, "5:3 R1,10 r1,1").unwrap();
    assert!(
        (5..=22).all(|r| t.lookup(r) == Some(3)),
        "R1,10 repeats 0x10 times, r1,1 once more"
    );
    assert_eq!(t.lookup(23), Some(0));
}

#[test]
fn hex_numbers() {
    let t = run(16, 0x200, "1fF:F").unwrap();
    assert_eq!(t.lookup(0x1ff), Some(15));
}

#[test]
fn refusals() {
    let cases = [
        ("", MessageError::Empty),
        ("x", MessageError::Syntax(1)),
        ("1", MessageError::Syntax(1)),
        ("1:", MessageError::Syntax(1)),
        ("1:2 :", MessageError::Syntax(2)),
        ("g:1", MessageError::Syntax(1)),
        (":1", MessageError::NoPrevious(1)),
        ("R1,1", MessageError::NoPrevious(1)),
        ("1:1 R,1", MessageError::Syntax(2)),
        ("1:1 R1,", MessageError::Syntax(2)),
        ("1:1 R1", MessageError::Syntax(2)),
        ("1:1 R0,1", MessageError::BadCycle(2, 0)),
        ("1:1 R3,1", MessageError::BadCycle(2, 3)),
        (
            "1:1 R1,ffffffff",
            MessageError::RegionOutOfRange(2, 0x1_0000_0000),
        ),
        ("1:1 R1,63", MessageError::RegionOutOfRange(2, 100)),
        ("100000000:0", MessageError::Overflow(1)),
        ("0:100000000", MessageError::Overflow(1)),
        ("1:1 R100000000,1", MessageError::Overflow(2)),
        ("64:0", MessageError::RegionOutOfRange(1, 100)),
        ("0:3", MessageError::NoSuchPath(1, 3)),
        ("63:0 :1", MessageError::RegionOutOfRange(2, 100)),
    ];
    for (msg, want) in cases {
        assert_eq!(run(3, 100, msg).err(), Some(want), "message {msg:?}");
        assert!(!want.to_string().is_empty());
    }
}

#[test]
fn overlong_hex_is_overflow_not_wrap() {
    let msg = format!("{}:0", "f".repeat(1000));
    assert_eq!(run(3, 100, &msg).err(), Some(MessageError::Overflow(1)));
}
