/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What bindgen reads to generate kapi/bindings_generated.rs: the
 * device-mapper and generic-netlink APIs the kernel crate of 6.12 does not
 * cover, and the kapi glue. Types the kernel crate already binds (bio,
 * sk_buff, module, ...) are taken from kernel::bindings, not generated again.
 */
#include <linux/device-mapper.h>
#include <linux/netlink.h>
#include <net/genetlink.h>
#include "kapi_glue.h"
