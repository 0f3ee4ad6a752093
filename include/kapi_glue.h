/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C glue of the kapi abstractions: the few kernel facilities the Rust code
 * reaches that are static inline functions or macros in C (preemption and
 * this-CPU operations where kapi/preempt.rs does not emit them inline, per-CPU
 * counters and statistics, genetlink replies and policies). Every
 * function is a thin forwarder with no knowledge of any target; see
 * kapi/glue.c.
 */
#ifndef _KAPI_GLUE_H
#define _KAPI_GLUE_H

#include <linux/types.h>

struct block_device;
struct genl_info;
struct genl_family;
struct sk_buff;
struct nla_policy;
struct nlattr;
struct netlink_callback;
struct attribute;

/*
 * preempt_disable(), preempt_enable(), this_cpu_inc(*@counter) and
 * this_cpu_read(*@ptr), for the configurations where kapi/preempt.rs does
 * not emit them inline (defined only there: not on x86-64 with
 * CONFIG_PREEMPT_DYNAMIC).
 */
void kapi_preempt_disable(void);
void kapi_preempt_enable(void);
void kapi_this_cpu_inc(u64 __percpu *counter);
void *kapi_this_cpu_read_ptr(void * __percpu *ptr);

/* Per-CPU array of @n u64 counters, zeroed; NULL on allocation failure. */
u64 __percpu *kapi_percpu_u64_alloc(unsigned int n);
void kapi_percpu_u64_free(u64 __percpu *counters);
/* Sum of counter @idx over every possible CPU. */
u64 kapi_percpu_u64_sum(u64 __percpu *counters, unsigned int idx);

/*
 * I/O statistics rows for any number of rows: each possible CPU has its own
 * zeroed array of @rows rows, kvzalloc'd whole cache lines (alloc_percpu
 * stops at 32 KiB), reached through a per-CPU pointer. A row is
 * KAPI_IOSTAT_WIDTH u64s: I/O (bio) counts by stat group (read, write,
 * discard, flush: op_stat_group(), as in /proc/diskstats), then sectors by
 * stat group. A CPU writes only its own array, with preemption disabled
 * (kapi/iostat.rs); like dm-stats on 64-bit, a bio accounted from an
 * interrupt that hits between the load and the store of the same counter may
 * go uncounted.
 */
#define KAPI_IOSTAT_WIDTH 8
u64 * __percpu *kapi_iostat_alloc(size_t rows);
void kapi_iostat_free(u64 * __percpu *stats);
/* Adds every CPU's rows into @out (@rows * KAPI_IOSTAT_WIDTH u64s); may sleep. */
void kapi_iostat_sum(u64 * __percpu *stats, size_t rows, u64 *out);
/* Column @col (< KAPI_IOSTAT_WIDTH) summed over every row and CPU. */
u64 kapi_iostat_column_sum(u64 * __percpu *stats, size_t rows, unsigned int col);

/* Size (in sectors) and logical block size (in bytes) of a block device. */
sector_t kapi_bdev_sectors(struct block_device *bdev);
unsigned int kapi_bdev_logical_block_size(struct block_device *bdev);

/*
 * A reply to the request in @info: a message of @family, command @cmd, with
 * room for one attribute of @len bytes; NULL if it cannot be allocated.
 * Allocated before the request is acted on, so that acting on it never
 * depends on an allocation that could still fail afterwards.
 */
struct sk_buff *kapi_genl_reply_new(struct genl_info *info, const struct genl_family *family,
				    u8 cmd, int len);
/*
 * Adds the attribute @attrtype with @len bytes of @data (at most the @len
 * the reply was made for) and sends the reply; consumes @skb.
 */
int kapi_genl_reply_send(struct sk_buff *skb, struct genl_info *info, int attrtype,
			 const void *data, int len);
/* Frees a reply that was not sent. */
void kapi_genl_reply_free(struct sk_buff *skb);
/* The payload of attribute @attrtype of @info, or NULL; its length in *@len. */
const void *kapi_genl_attr(struct genl_info *info, int attrtype, u32 *len);

/*
 * An attribute policy of @maxattr + 1 entries, all unset (NULL on allocation
 * failure); kapi_nla_policy_set_*() fill entry @attrtype (<= @maxattr, else
 * nothing happens). Freed with kapi_nla_policy_free() once the family is
 * unregistered.
 */
struct nla_policy *kapi_nla_policy_new(int maxattr);
void kapi_nla_policy_set_binary(struct nla_policy *policy, int maxattr, int attrtype, u16 max_len);
void kapi_nla_policy_set_u32(struct nla_policy *policy, int maxattr, int attrtype);
void kapi_nla_policy_free(const struct nla_policy *policy);

/*
 * Dumps. The family of a dump, its request skb, and the request attribute
 * @attrtype read as a u32 (false if absent).
 */
const struct genl_family *kapi_genl_dump_family(struct netlink_callback *cb);
u8 kapi_genl_dump_cmd(struct netlink_callback *cb);
struct sk_buff *kapi_genl_dump_request_skb(struct netlink_callback *cb);
bool kapi_genl_dump_u32(struct netlink_callback *cb, int attrtype, u32 *value);
/* Sets the extended-ack message of the dump's request (@msg: a static string). */
void kapi_genl_dump_set_err_msg(struct netlink_callback *cb, const char *msg);
/* The slot of @cb where a dump keeps its state between calls. */
void **kapi_genl_dump_state(struct netlink_callback *cb);
/* Bytes of @skb used so far, and the largest attribute payload one more message can carry. */
int kapi_skb_len(struct sk_buff *skb);
int kapi_genl_dump_room(struct sk_buff *skb);
/*
 * Appends to @skb a message of the dump's family, command @cmd, NLM_F_MULTI,
 * answering @cb's request, with one attribute @attrtype of @len bytes, and
 * returns the attribute's payload for the caller to fill (before the dump
 * call returns); NULL if it does not fit.
 */
void *kapi_genl_dump_add(struct sk_buff *skb, struct netlink_callback *cb, u8 cmd, int attrtype,
			 int len);

/* sysfs_attr_init(): gives a dynamically allocated attribute a static lockdep key. */
void kapi_sysfs_attr_init(struct attribute *attr);

#endif /* _KAPI_GLUE_H */
