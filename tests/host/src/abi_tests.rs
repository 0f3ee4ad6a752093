//! `pure/abi.rs`, the one Rust definition of the DM_SWITCH ABI, against the
//! C header agents compile against (`include/uapi/dm-switch.h`), with a C
//! compiler: every offset, size and number.

use crate::abi::*;
use std::path::PathBuf;
use std::process::Command;

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
    printf("const.NETLINK_CMD_DUMP_PAGE_TBL %d\n", NETLINK_CMD_DUMP_PAGE_TBL);
    printf("const.DM_SWITCH_ATTR_DEV_MAJOR %d\n", DM_SWITCH_ATTR_DEV_MAJOR);
    printf("const.DM_SWITCH_ATTR_DEV_MINOR %d\n", DM_SWITCH_ATTR_DEV_MINOR);
printf("const.DM_SWITCH_ATTR_RESPONSE %d\n", DM_SWITCH_ATTR_RESPONSE);
printf("const.DM_SWITCH_CMD_DUMP_PATH_STATS %d\n", DM_SWITCH_CMD_DUMP_PATH_STATS);
printf("const.DM_SWITCH_ATTR_PATH_STATS %d\n", DM_SWITCH_ATTR_PATH_STATS);
printf("const.DM_SWITCH_STAT_GROUPS %d\n", DM_SWITCH_STAT_GROUPS);
printf("const.DM_SWITCH_STAT_FLUSH %d\n", DM_SWITCH_STAT_FLUSH);
O(dm_switch_path_stats, path); O(dm_switch_path_stats, reserved);
O(dm_switch_path_stats, ios); O(dm_switch_path_stats, sectors);
printf("sizeof.dm_switch_path_stats %zu\n", sizeof(struct dm_switch_path_stats));
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
        (
            "const.NETLINK_CMD_DUMP_PAGE_TBL",
            CMD_DUMP_PAGE_TBL.to_string(),
        ),
        ("const.DM_SWITCH_ATTR_DEV_MAJOR", ATTR_DEV_MAJOR.to_string()),
        ("const.DM_SWITCH_ATTR_DEV_MINOR", ATTR_DEV_MINOR.to_string()),
        ("const.DM_SWITCH_ATTR_RESPONSE", ATTR_RESPONSE.to_string()),
        (
            "const.DM_SWITCH_CMD_DUMP_PATH_STATS",
            CMD_DUMP_PATH_STATS.to_string(),
        ),
        (
            "const.DM_SWITCH_ATTR_PATH_STATS",
            ATTR_PATH_STATS.to_string(),
        ),
        (
            "const.DM_SWITCH_STAT_GROUPS",
            path_stats::GROUPS.to_string(),
        ),
        ("const.DM_SWITCH_STAT_FLUSH", "3".into()),
        ("dm_switch_path_stats.path", path_stats::PATH.to_string()),
        (
            "dm_switch_path_stats.reserved",
            path_stats::RESERVED.to_string(),
        ),
        ("dm_switch_path_stats.ios", path_stats::IOS.to_string()),
        (
            "dm_switch_path_stats.sectors",
            path_stats::SECTORS.to_string(),
        ),
        ("sizeof.dm_switch_path_stats", path_stats::LEN.to_string()),
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
