// SPDX-License-Identifier: GPL-2.0
/*
 * C glue of the kapi abstractions: forwarders for static inline kernel
 * functions and macros the Rust crate cannot call directly (per-CPU access
 * among them). No target logic lives here.
 */
#include <linux/blkdev.h>
#include <linux/overflow.h>
#include <linux/percpu.h>
#include <linux/preempt.h>
#include <linux/slab.h>
#include <linux/sysfs.h>
#include <net/genetlink.h>

#include "kapi_glue.h"

#if !(defined(CONFIG_X86_64) && defined(CONFIG_PREEMPT_DYNAMIC))
/* kapi/preempt.rs emits these inline on x86-64 with CONFIG_PREEMPT_DYNAMIC. */
void kapi_preempt_disable(void)
{
	preempt_disable();
}

void kapi_preempt_enable(void)
{
	preempt_enable();
}

void kapi_this_cpu_inc(u64 __percpu *counter)
{
	this_cpu_inc(*counter);
}

void *kapi_this_cpu_read_ptr(void * __percpu *ptr)
{
	return this_cpu_read(*ptr);
}
#endif

u64 __percpu *kapi_percpu_u64_alloc(unsigned int n)
{
	return __alloc_percpu(n * sizeof(u64), sizeof(u64));
}

void kapi_percpu_u64_free(u64 __percpu *counters)
{
	free_percpu(counters);
}

u64 kapi_percpu_u64_sum(u64 __percpu *counters, unsigned int idx)
{
	u64 sum = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		sum += per_cpu_ptr(counters, cpu)[idx];
	return sum;
}

static_assert(KAPI_IOSTAT_WIDTH == 2 * NR_STAT_GROUPS);

void kapi_iostat_free(u64 * __percpu *stats)
{
	int cpu;

	if (!stats)
		return;
	for_each_possible_cpu(cpu)
		kvfree(*per_cpu_ptr(stats, cpu));
	free_percpu(stats);
}

u64 * __percpu *kapi_iostat_alloc(size_t rows)
{
	u64 * __percpu *stats = alloc_percpu(u64 *);
	size_t bytes;
	int cpu;

	if (!stats)
		return NULL;
	/* Whole cache lines: no CPU's array shares one with another's. */
	if (check_mul_overflow(rows, KAPI_IOSTAT_WIDTH * sizeof(u64), &bytes))
		goto fail;
	bytes = ALIGN(max_t(size_t, bytes, 1), SMP_CACHE_BYTES);
	for_each_possible_cpu(cpu) {
		u64 *a = kvzalloc_node(bytes, GFP_KERNEL_ACCOUNT, cpu_to_node(cpu));

		if (!a)
			goto fail;
		*per_cpu_ptr(stats, cpu) = a;
	}
	return stats;
fail:
	kapi_iostat_free(stats);
	return NULL;
}

void kapi_iostat_sum(u64 * __percpu *stats, size_t rows, u64 *out)
{
	size_t i, n = rows * KAPI_IOSTAT_WIDTH;
	int cpu;

	for_each_possible_cpu(cpu) {
		const u64 *a = *per_cpu_ptr(stats, cpu);

		for (i = 0; i < n; i++)
			out[i] += READ_ONCE(a[i]);
		cond_resched();
	}
}

u64 kapi_iostat_column_sum(u64 * __percpu *stats, size_t rows, unsigned int col)
{
	u64 sum = 0;
	size_t i;
	int cpu;

	for_each_possible_cpu(cpu) {
		const u64 *a = *per_cpu_ptr(stats, cpu);

		for (i = 0; i < rows; i++)
			sum += READ_ONCE(a[i * KAPI_IOSTAT_WIDTH + col]);
	}
	return sum;
}

sector_t kapi_bdev_sectors(struct block_device *bdev)
{
	return bdev_nr_sectors(bdev);
}

unsigned int kapi_bdev_logical_block_size(struct block_device *bdev)
{
	return bdev_logical_block_size(bdev);
}

struct sk_buff *kapi_genl_reply_new(struct genl_info *info, const struct genl_family *family,
				    u8 cmd, int len)
{
	struct sk_buff *skb;

	skb = genlmsg_new(nla_total_size(len), GFP_KERNEL);
	if (!skb)
		return NULL;
	if (!genlmsg_put_reply(skb, info, family, 0, cmd)) {
		nlmsg_free(skb);
		return NULL;
	}
	return skb;
}

int kapi_genl_reply_send(struct sk_buff *skb, struct genl_info *info, int attrtype,
			 const void *data, int len)
{
	if (nla_put(skb, attrtype, len, data)) {
		nlmsg_free(skb);
		return -EMSGSIZE;
	}
	nlmsg_end(skb, nlmsg_hdr(skb));	/* the one message the skb holds */
	return genlmsg_reply(skb, info);
}

void kapi_genl_reply_free(struct sk_buff *skb)
{
	nlmsg_free(skb);
}

const void *kapi_genl_attr(struct genl_info *info, int attrtype, u32 *len)
{
	const struct nlattr *na = info->attrs ? info->attrs[attrtype] : NULL;

	if (!na)
		return NULL;
	*len = nla_len(na);
	return nla_data(na);
}

struct nla_policy *kapi_nla_policy_new(int maxattr)
{
	if (maxattr < 0)
		return NULL;
	return kcalloc(maxattr + 1, sizeof(struct nla_policy), GFP_KERNEL);
}

void kapi_nla_policy_set_binary(struct nla_policy *policy, int maxattr, int attrtype, u16 max_len)
{
	if (attrtype < 0 || attrtype > maxattr)
		return;
	policy[attrtype].type = NLA_BINARY;
	policy[attrtype].len = max_len;
}

void kapi_nla_policy_set_u32(struct nla_policy *policy, int maxattr, int attrtype)
{
	if (attrtype < 0 || attrtype > maxattr)
		return;
	policy[attrtype].type = NLA_U32;
}

void kapi_nla_policy_free(const struct nla_policy *policy)
{
	kfree(policy);
}

const struct genl_family *kapi_genl_dump_family(struct netlink_callback *cb)
{
	return genl_info_dump(cb)->family;
}

u8 kapi_genl_dump_cmd(struct netlink_callback *cb)
{
	return genl_dumpit_info(cb)->op.cmd;
}

struct sk_buff *kapi_genl_dump_request_skb(struct netlink_callback *cb)
{
	return cb->skb;
}

bool kapi_genl_dump_u32(struct netlink_callback *cb, int attrtype, u32 *value)
{
	const struct genl_info *info = genl_info_dump(cb);

	if (!info->attrs || !info->attrs[attrtype])
		return false;
	*value = nla_get_u32(info->attrs[attrtype]);
	return true;
}

void kapi_genl_dump_set_err_msg(struct netlink_callback *cb, const char *msg)
{
	/* NL_SET_ERR_MSG() without its literal-only static copy: @msg is static. */
	if (cb->extack)
		cb->extack->_msg = msg;
}

void **kapi_genl_dump_state(struct netlink_callback *cb)
{
	BUILD_BUG_ON(sizeof(cb->ctx) < sizeof(void *));
	return (void **)cb->ctx;
}

int kapi_skb_len(struct sk_buff *skb)
{
	return skb->len;
}

int kapi_genl_dump_room(struct sk_buff *skb)
{
	int room = skb_tailroom(skb) - NLMSG_HDRLEN - GENL_HDRLEN - NLA_HDRLEN;

	return room > 0 ? room & ~3 : 0;
}

void *kapi_genl_dump_add(struct sk_buff *skb, struct netlink_callback *cb, u8 cmd, int attrtype,
			 int len)
{
	void *hdr;
	struct nlattr *attr;

	hdr = genlmsg_put(skb, NETLINK_CB(cb->skb).portid, cb->nlh->nlmsg_seq,
			  genl_info_dump(cb)->family, NLM_F_MULTI, cmd);
	if (!hdr)
		return NULL;
	attr = nla_reserve(skb, attrtype, len);
	if (!attr) {
		genlmsg_cancel(skb, hdr);
		return NULL;
	}
	genlmsg_end(skb, hdr);
	return nla_data(attr);
}

void kapi_sysfs_attr_init(struct attribute *attr)
{
	sysfs_attr_init(attr);
}
