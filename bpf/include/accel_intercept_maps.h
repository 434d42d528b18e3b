/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The interception's maps (tc_tproxy.c, cgroup_egress.c), pinned by name
 * (LIBBPF_PIN_BY_NAME) in the attachment's directory beside the fast
 * path's (accel_maps.h), and the helpers the programs reach them with.
 * sockops.c does not include this file: it reaches the maps it needs
 * through slots (accel_intercept_flows.h).
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
 * sees them: accel_tproxy_flows, a HASH that tc_tproxy.c declares, sized by
 * attach --max-flows, and writes on the SYN so that the rest of the
 * connection follows it. Never evicted: a live flow stays until its socket
 * closes; a SYN that finds it full is refused.
 *
 * Every map of this file belongs to the interception: made when it is
 * installed (tc_tproxy.c is loaded first, and makes them), removed with
 * it. The fast path's object (sockops.c) declares none of them: user space
 * puts the three sockops.c needs (the flows, the closed ones, the
 * counters) in the fast path's slots (accel_intercept_flows.h), which are
 * empty while there is no interception.
 */
/* Flows whose application socket has closed (sockops.c moves them here,
 * through accel_tproxy_closed_slot):
 * the socket may still send a RST after its close (unread data, SO_LINGER
 * 0) or an ACK from TIME_WAIT, and those must reach the proxy's side too.
 * LRU: only the last packets of closed connections can be crowded out.
 * Must match struct accel_tproxy_closed_map (accel_intercept_flows.h). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_FLOWS_CLOSED_MAX);
	__type(key, struct accel_sock_key);
	__type(value, struct accel_tproxy_flow);
} accel_tproxy_closed SEC(".maps");

/*
 * SYNs that tc_tproxy.c left to the kernel because a proxy-side TIME_WAIT
 * socket held their 4-tuple: the kernel retires that socket and looks up a
 * listener for the packet's own destination, and sk_lookup.c, which runs in
 * that lookup, hands it the proxy listener named here instead (and takes
 * the entry out). Keyed like struct accel_sock_key from the TIME_WAIT
 * socket's side (local: the original destination), netns 0: the maps of
 * an interception serve one network namespace. LRU: an entry whose SYN
 * never reached the lookup is crowded out.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
#ifdef ACCEL_TEST_INTERCEPT_LAYOUT_VARIANT
	/* Only in a test build (test/integration/upgrade-intercept.test.ts):
	 * an interception map whose layout (its flags) changed, which an
	 * upgrade must refuse to carry over. */
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
#endif
	__uint(max_entries, ACCEL_TW_SYNS_MAX);
	__type(key, struct accel_sock_key);
	__type(value, struct accel_proxy_key);
} accel_tproxy_tw SEC(".maps");

/* Must match struct accel_tproxy_counters_map (accel_intercept_flows.h). */
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

#endif /* ACCEL_INTERCEPT_MAPS_H */
