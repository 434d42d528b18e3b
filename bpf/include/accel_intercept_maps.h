/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The interception's maps (tc_tproxy.c, cgroup_egress.c), pinned by name
 * (LIBBPF_PIN_BY_NAME) in the attachment's directory beside the fast
 * path's (accel_maps.h), and the helpers the programs reach them with.
 * sockops.c sees steered flows through accel_intercept_flows.h.
 */
#ifndef ACCEL_INTERCEPT_MAPS_H
#define ACCEL_INTERCEPT_MAPS_H

#include "accel.h"

/* Interception rules, the first rule_count elements are in use. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_RULES_MAX);
	__type(key, __u32);
	__type(value, struct accel_intercept_rule);
} accel_tproxy_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct accel_tproxy_config);
} accel_tproxy_config SEC(".maps");

/*
 * Connections being steered to the proxy, keyed as the application's socket
 * sees them: accel_tproxy_flows, a HASH that belongs to the interception.
 * tc_tproxy.c declares it and makes it when interception is installed,
 * sized by attach --max-flows (a size is fixed when a map is made, and the
 * fast path's maps are made before any interception), and writes it on
 * the SYN so that the rest of the connection follows it. Never evicted: a
 * live flow stays until its socket closes; a SYN that finds it full is
 * refused. User space puts it in the one slot below, through which
 * sockops.c reads it (to put both ends of the application <-> proxy hop on
 * the fast path) and deletes a flow when the application's socket closes.
 * An empty slot: no interception.
 */
/* The slot's inner map: type, key and value size and flags must be those of
 * accel_tproxy_flows (tc_tproxy.c). Sizes, not types: clang leaves a type
 * this deep in a map definition as a forward declaration in the BTF, whose
 * size libbpf cannot know. */
struct accel_tproxy_flows_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, ACCEL_FLOWS_MAX);
	__uint(key_size, sizeof(struct accel_sock_key));
	__uint(value_size, sizeof(struct accel_tproxy_flow));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct accel_tproxy_flows_map);
} accel_tproxy_flows_slot SEC(".maps");

/* Flows whose application socket has closed (sockops.c moves them here):
 * the socket may still send a RST after its close (unread data, SO_LINGER
 * 0) or an ACK from TIME_WAIT, and those must reach the proxy's side too.
 * LRU: only the last packets of closed connections can be crowded out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_FLOWS_CLOSED_MAX);
	__type(key, struct accel_sock_key);
	__type(value, struct accel_tproxy_flow);
} accel_tproxy_closed SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_TP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} accel_tproxy_counters SEC(".maps");

static __always_inline void accel_tp_count(enum accel_tproxy_counter idx)
{
	__u32 key = idx;
	__u64 *val = bpf_map_lookup_elem(&accel_tproxy_counters, &key);

	if (val)
		*val += 1;
}

/* The interception's flow map, or NULL when there is no interception. */
static __always_inline void *accel_tp_flows(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&accel_tproxy_flows_slot, &zero);
}

#endif /* ACCEL_INTERCEPT_MAPS_H */
