// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The interception's guard on every way out of the cgroup (cgroup_skb
 * egress, attached to the intercepted cgroup): the tc programs act only on
 * the devices attach --iface names, and a socket can leave by another one
 * (SO_BINDTODEVICE, unprivileged since Linux 5.7; a VPN or tun device; a
 * second NIC with a route). Here every IP packet the cgroup sends is seen,
 * with the device it leaves by (skb->ifindex), before any tc program:
 * - a TCP SYN to a covered destination (an intercept rule's prefix and
 *   ports) leaving by a device interception does not hook is dropped and
 *   counted (unhooked_refused); so is what cannot be read safely there
 *   (unparsed_dropped), as tc_tproxy.c drops it on the hooked ones;
 * - with attach --intercept-udp refuse, UDP to a covered destination is
 *   refused on every device (udp_refused): sendmsg fails with EPERM, and
 *   browsers fall back from QUIC to TCP, which is intercepted.
 * The proxies' own upstream sockets (accel_proxy_maps.h) are never
 * refused. Everything else passes: the program only ever says no.
 */
#include "accel_common.h"
#include "accel_intercept_maps.h"
#include "accel_proxy_maps.h"
#include "accel_tproxy_match.h"

#define CG_PASS 1
#define CG_DROP 0

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct accel_tproxy_egress);
} accel_tproxy_egress SEC(".maps");

static __always_inline int accel_hooked(const struct accel_tproxy_egress *eg, __u32 ifindex)
{
	for (__u32 i = 0; i < ACCEL_IFACES_MAX; i++) {
		if (i >= eg->iface_count)
			break;
		if (eg->ifindex[i] == ifindex)
			return 1;
	}
	return 0;
}

SEC("cgroup_skb/egress")
int accel_cgroup_egress(struct __sk_buff *skb)
{
	struct accel_tproxy_config *cfg = accel_tp_config();
	struct accel_tproxy_egress *eg;
	struct accel_pkt p;
	__u32 zero = 0;
	int parsed;

	accel_build_variant();
	if (!cfg || !cfg->proxy_port)
		return CG_PASS;
	eg = bpf_map_lookup_elem(&accel_tproxy_egress, &zero);
	if (!eg)
		return CG_PASS;
	parsed = accel_parse_l3(skb, skb->protocol, 0, &p);
	if (parsed == ACCEL_PARSED_OTHER)
		return CG_PASS;
	if (parsed == ACCEL_PARSED_UDP) {
		if (!(eg->flags & ACCEL_EGRESS_REFUSE_UDP) || !accel_rule_matches(cfg, &p) || accel_proxy_socket(skb))
			return CG_PASS;
		accel_tp_count(ACCEL_TP_UDP_REFUSED);
		return CG_DROP;
	}
	/* The tc egress program of a hooked device decides. */
	if (accel_hooked(eg, skb->ifindex))
		return CG_PASS;
	if (parsed == ACCEL_PARSED_OPAQUE) {
		accel_tp_count(ACCEL_TP_UNPARSED_DROPPED);
		return CG_DROP;
	}
	if (!p.syn || p.ack || !accel_rule_matches(cfg, &p) || accel_proxy_socket(skb))
		return CG_PASS;
	accel_tp_count(ACCEL_TP_UNHOOKED_REFUSED);
	return CG_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
