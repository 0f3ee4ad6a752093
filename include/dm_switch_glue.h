/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C glue of dm_switch: the few kernel facilities the Rust code reaches that are
 * static inline functions or macros in C (RCU read side, per-CPU counters,
 * bio remapping, genetlink replies), and the netlink attribute policy whose
 * type is opaque to Rust. Everything here is a thin forwarder; see
 * dm_switch_glue.c.
 */
#ifndef _DM_SWITCH_GLUE_H
#define _DM_SWITCH_GLUE_H

#include <linux/types.h>

struct bio;
struct block_device;
struct genl_info;
struct genl_family;
struct sk_buff;
struct nla_policy;

/*
 * RCU-sched read-side critical section: preemption disabled, which
 * synchronize_rcu() waits for (v5.0 and later). Cheaper than preemptible
 * RCU's out-of-line rcu_read_unlock() on the I/O path.
 */
void dm_switch_rcu_read_lock_sched(void);
void dm_switch_rcu_read_unlock_sched(void);

/* Per-CPU array of @n u64 counters, zeroed; NULL on allocation failure. */
u64 __percpu *dm_switch_counters_alloc(unsigned int n);
void dm_switch_counters_free(u64 __percpu *counters);
/* Sum of counter @idx over every possible CPU. */
u64 dm_switch_counter_sum(u64 __percpu *counters, unsigned int idx);

/* bio_set_dev() plus the new start sector. */
void dm_switch_bio_remap(struct bio *bio, struct block_device *bdev, sector_t sector);
/*
 * map()'s last call: ends the caller's RCU-sched read-side critical section,
 * this_cpu_inc(*@counter), then dm_switch_bio_remap().
 */
void dm_switch_unlock_count_remap(struct bio *bio, struct block_device *bdev,
				  sector_t sector, u64 __percpu *counter);

/* Size and logical block size of a block device. */
sector_t dm_switch_bdev_sectors(struct block_device *bdev);
unsigned int dm_switch_bdev_logical_block_size(struct block_device *bdev);
/* The dev_t of a block device. */
dev_t dm_switch_bdev_devt(struct block_device *bdev);

/*
 * A reply to the request in @info: a message of @family, command @cmd, with
 * room for one attribute of @len bytes; NULL if it cannot be allocated.
 * Allocated before the request is acted on, so that acting on it never
 * depends on an allocation that could still fail afterwards.
 */
struct sk_buff *dm_switch_genl_reply_new(struct genl_info *info, const struct genl_family *family,
					 u8 cmd, int len);
/*
 * Adds the attribute @attrtype with @len bytes of @data (at most the @len
 * the reply was made for) and sends the reply; consumes @skb.
 */
int dm_switch_genl_reply_send(struct sk_buff *skb, struct genl_info *info, int attrtype,
			      const void *data, int len);
/* Frees a reply that was not sent. */
void dm_switch_genl_reply_free(struct sk_buff *skb);
/* The NETLINK_ATTR_MSG payload of @info, or NULL; its length in *@len. */
const void *dm_switch_genl_msg(struct genl_info *info, int attrtype, u32 *len);

/* Attribute policy of the DM_SWITCH family (NETLINK_ATTR_MAX + 1 entries). */
extern const struct nla_policy dm_switch_genl_policy[];

#endif /* _DM_SWITCH_GLUE_H */
