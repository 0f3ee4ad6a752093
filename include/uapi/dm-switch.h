/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * dm-switch generic-netlink ABI (family "DM_SWITCH", version 1).
 *
 * This is the wire format of the 2011 RFC "dm-switch target [v3]", unchanged,
 * so agents written against the RFC keep working, and two extensions: the
 * table read-back and the per-path statistics dumps. All integers are in host
 * byte order. The kernel module never casts a message to these structures: it
 * decodes the bytes field by field, so senders need not align the payload.
 */
#ifndef _UAPI_DM_SWITCH_H
#define _UAPI_DM_SWITCH_H

#ifdef __KERNEL__
#include <linux/types.h>
#else
#include <stdint.h>
#endif

/* Name and version of the generic-netlink family. */
#define DM_SWITCH_GENL_NAME "DM_SWITCH"
#define DM_SWITCH_GENL_VERSION 1

/*
 * Page-table entries per chunk. The kernel allocates the table in chunks of
 * this many entries; a window with page_count 0 at a multiple of it frees one.
 */
#define CHUNK_PTE_SHIFT (13)
#define CHUNK_PTE_COUNT (1LL << CHUNK_PTE_SHIFT)

#define MAX_IPC_MSG_LEN 65480	/* largest NETLINK_ATTR_MSG payload */
#define MAX_ERR_STR_LEN 255	/* longest err_str, without its NUL */

enum Opcode {
	OPCODE_PAGE_TABLE_UPLOAD = 1,
};

/*
 * Request: one window of the page table, in NETLINK_ATTR_MSG.
 *
 * ptbl_buff holds page_count entries of pte_bits bits each, packed into
 * 32-bit words, least significant field first; a field never straddles two
 * words, so a word holds 32 / pte_bits fields. page_offset must be a multiple
 * of that. A window replaces exactly its own entries. A change of page_total
 * or pte_bits replaces the whole table. page_count 0 with a chunk-aligned
 * page_offset frees that chunk (its regions become unmapped: path 0).
 */
struct IpcPgTable {
	uint32_t total_len;	/* informational; never trusted */
	uint32_t opcode;	/* enum Opcode: must be OPCODE_PAGE_TABLE_UPLOAD */
	uint32_t userland[2];	/* opaque words shown by dmsetup status */
	uint32_t dev_major;	/* DM device major */
	uint32_t dev_minor;	/* DM device minor */
	uint32_t page_total;	/* regions in the whole table */
	uint32_t page_offset;	/* first region of this window */
	uint32_t page_count;	/* regions in this window */
	uint16_t dev_count;	/* paths: must equal the target's */
	uint8_t pte_bits;	/* bits per entry, 1..32 */
	uint8_t reserved;	/* uploads: ignored; dump replies: the table's own pte_bits */
	uint32_t ptbl_buff[1];	/* packed entries (variable length) */
};

/* Bytes before ptbl_buff. */
#define IPC_PG_TABLE_HDR_LEN 40

/*
 * Reply: in an attribute of type DM_SWITCH_ATTR_RESPONSE of a message with
 * command NETLINK_CMD_GET_PAGE_TBL. status is 0 or a positive errno.
 */
struct IpcResponse {
	uint32_t total_len;	/* sizeof(struct IpcResponse): 284 */
	uint32_t opcode;	/* echoed */
	uint32_t userland[2];	/* echoed */
	uint32_t dev_major;	/* echoed */
	uint32_t dev_minor;	/* echoed */
	uint32_t status;	/* 0 on success; errno on failure */
	char err_str[MAX_ERR_STR_LEN + 1];	/* NUL-terminated reason */
};

/*
 * Generic Netlink attributes. NETLINK_ATTR_MSG (binary) carries an
 * IpcPgTable; the dump commands take the device as two u32 attributes;
 * DM_SWITCH_ATTR_PATH_STATS (binary) carries consecutive
 * struct dm_switch_path_stats records.
 */
enum {
	NETLINK_ATTR_UNSPEC,
	NETLINK_ATTR_MSG,
	DM_SWITCH_ATTR_DEV_MAJOR,
	DM_SWITCH_ATTR_DEV_MINOR,
	DM_SWITCH_ATTR_PATH_STATS,
	NETLINK_ATTR__MAX,
};
#define NETLINK_ATTR_MAX (NETLINK_ATTR__MAX - 1)

/* The RFC put its reply in an attribute whose type is NLA_BINARY (11). */
#define DM_SWITCH_ATTR_RESPONSE 11

/*
 * Generic Netlink commands.
 *
 * NETLINK_CMD_GET_PAGE_TBL uploads one window (the RFC's command, with its
 * lenient attribute parsing).
 *
 * NETLINK_CMD_DUMP_PAGE_TBL (an extension; NLM_F_DUMP, strict attribute
 * validation) reads back the live table of DM_SWITCH_ATTR_DEV_MAJOR:
 * DM_SWITCH_ATTR_DEV_MINOR: a multipart reply of messages with this command,
 * each carrying one IpcPgTable window in NETLINK_ATTR_MSG, that replayed as
 * uploads recreate the table exactly (placement, userland words, allocated
 * chunks). Windows never cross a chunk; an unallocated chunk is a window with
 * page_count 0 at the chunk's first region (the upload that frees it);
 * windows are packed at the table's pte_bits, or at the next power of two
 * when 32 is not a multiple of it, and their `reserved` byte holds the
 * table's own pte_bits (the width an upload must use to change the table in
 * place: another width replaces the whole table). The reply is an exact snapshot: the table
 * is copied (copy-on-write) when the dump starts. Needs CAP_SYS_ADMIN and
 * CAP_NET_ADMIN; refusals are NLMSG_ERRORs with an extended-ack text.
 *
 * DM_SWITCH_CMD_DUMP_PATH_STATS (an extension; same request, permissions
 * and refusals, but a suspended device's counters can be read) reads the I/O
 * the device's switch target sent to each path since its table was loaded: a
 * multipart reply whose messages each carry one DM_SWITCH_ATTR_PATH_STATS
 * attribute of consecutive records, one per path, in path order, summed over
 * the CPUs when the dump starts.
 */
enum {
	NETLINK_CMD_UNSPEC,
	NETLINK_CMD_GET_PAGE_TBL,
	NETLINK_CMD_DUMP_PAGE_TBL,
	DM_SWITCH_CMD_DUMP_PATH_STATS,
	NETLINK_CMD__MAX,
};
#define NETLINK_CMD_MAX (NETLINK_CMD__MAX - 1)

/*
 * Stat groups of struct dm_switch_path_stats, as the block layer counts
 * them (/proc/diskstats): write-zeroes counts as a write; a flush is an
 * empty flush clone (no sectors).
 */
enum {
	DM_SWITCH_STAT_READ,
	DM_SWITCH_STAT_WRITE,
	DM_SWITCH_STAT_DISCARD,
	DM_SWITCH_STAT_FLUSH,
	DM_SWITCH_STAT_GROUPS,
};

/* One path's I/O since the table was loaded, in host byte order. */
struct dm_switch_path_stats {
	uint32_t path;				/* index in the table line */
	uint32_t reserved;			/* 0 */
	uint64_t ios[DM_SWITCH_STAT_GROUPS];	/* bios sent */
	uint64_t sectors[DM_SWITCH_STAT_GROUPS];	/* 512-byte sectors sent */
};

#endif /* _UAPI_DM_SWITCH_H */
