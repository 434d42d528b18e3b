/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * What sockops.c does for the interception: it finds the steered flow a
 * connection is (tc_tproxy.c made it on the SYN), so that both ends of the
 * application <-> proxy hop can go on the fast path, watches the
 * connecting sockets of the cgroup while an interception is installed, and
 * moves a flow to the closed set when its application's socket closes.
 * Only sockops.c includes this file.
 */
#ifndef ACCEL_INTERCEPT_FLOWS_H
#define ACCEL_INTERCEPT_FLOWS_H

#include "accel_common.h"
#include "accel_key.h"

/*
 * The fast path's slots for the interception: ARRAY_OF_MAPS of one element
 * each, pinned by name with the fast path's maps and empty while no
 * interception is installed. Installing one puts its maps in them
 * (src/intercept/maps.ts: the closed set and the counters first, the flows
 * last, as a flow map in its slot is what tells this file that there is an
 * interception); removing it empties them (the flows first). So the fast
 * path's object declares no map of the interception's
 * (accel_intercept_maps.h), and its pin directory holds none while there is
 * no interception.
 *
 * Each inner map template must agree with the interception's map in type,
 * key and value size and flags (and, for an array, size), or the kernel
 * refuses to put the map in its slot (EINVAL). Sizes, not types: clang
 * leaves a type this deep in a map definition as a forward declaration in
 * the BTF, whose size libbpf cannot know.
 */
struct accel_tproxy_flows_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, ACCEL_FLOWS_MAX);
	__uint(key_size, sizeof(struct accel_sock_key));
	__uint(value_size, sizeof(struct accel_tproxy_flow));
};

/* accel_tproxy_flows (tc_tproxy.c), read to put both ends of the
 * application <-> proxy hop on the fast path, and a flow deleted when the
 * application's socket closes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct accel_tproxy_flows_map);
} accel_tproxy_flows_slot SEC(".maps");

struct accel_tproxy_closed_map {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, ACCEL_FLOWS_CLOSED_MAX);
	__uint(key_size, sizeof(struct accel_sock_key));
	__uint(value_size, sizeof(struct accel_tproxy_flow));
};

/* accel_tproxy_closed: where that flow goes. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct accel_tproxy_closed_map);
} accel_tproxy_closed_slot SEC(".maps");

struct accel_tproxy_counters_map {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ACCEL_TP_MAX);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u64));
};

/* accel_tproxy_counters: ACCEL_TP_FLOWS_CLOSED is counted here. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct accel_tproxy_counters_map);
} accel_tproxy_counters_slot SEC(".maps");

/* The map in a slot, or NULL when it is empty. */
static __always_inline void *accel_tp_slot(void *slot)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(slot, &zero);
}

/* The interception's flow map, or NULL when there is no interception. */
static __always_inline void *accel_tp_flows(void)
{
	return accel_tp_slot(&accel_tproxy_flows_slot);
}

/* The steered flow this connection is, or NULL. The flow is keyed as the
 * application's socket sees it: for the proxy's side (passive) that is the
 * reversed key. */
static __always_inline struct accel_tproxy_flow *accel_steered(struct bpf_sock_ops *skops,
							       const struct accel_sock_key *key, int passive)
{
	struct accel_sock_key app;
	void *flows = accel_tp_flows();

	if (!flows)
		return NULL;
	if (!passive)
		return bpf_map_lookup_elem(flows, key);
	ACCEL_KEY_FROM_CTX(skops, &app, 1, key->netns);
	return bpf_map_lookup_elem(flows, &app);
}

/* A connecting socket while an interception is installed: its close must be
 * seen, whether or not its SYN gets steered (the flow is made after this). */
static __always_inline void accel_on_connect(struct bpf_sock_ops *skops)
{
	if (accel_tp_flows())
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* The application's socket of a steered flow closed (this runs before a
 * RST the close sends): the flow leaves the live set for the closed one,
 * where the socket's last packets still find it. Only the application's
 * socket has its own view as a flow key; the proxy's side never matches. */
static __always_inline void accel_flow_closed(const struct accel_sock_key *key)
{
	__u32 idx = ACCEL_TP_FLOWS_CLOSED;
	struct accel_tproxy_flow *flow;
	void *flows = accel_tp_flows();
	void *closed, *counters;
	__u64 *count;

	if (!flows)
		return;
	flow = bpf_map_lookup_elem(flows, key);
	if (!flow)
		return;
	closed = accel_tp_slot(&accel_tproxy_closed_slot);
	if (closed)
		bpf_map_update_elem(closed, key, flow, BPF_ANY);
	bpf_map_delete_elem(flows, key);
	counters = accel_tp_slot(&accel_tproxy_counters_slot);
	count = counters ? bpf_map_lookup_elem(counters, &idx) : NULL;
	if (count)
		*count += 1; /* per-CPU slot: no atomics needed */
}

#endif /* ACCEL_INTERCEPT_FLOWS_H */
