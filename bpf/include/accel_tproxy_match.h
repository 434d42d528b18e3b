/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * What the interception's packet programs share: parsing a packet down to
 * its TCP (or UDP) ports, from an Ethernet frame (tc_tproxy.c) or from its
 * IP header (cgroup_egress.c), and matching its destination against the
 * intercept rules. Fail closed: what may carry TCP but cannot be read
 * safely is ACCEL_PARSED_OPAQUE, and the callers drop it from the cgroup.
 */
#ifndef ACCEL_TPROXY_MATCH_H
#define ACCEL_TPROXY_MATCH_H

#include "accel_intercept_maps.h"
#include "accel_key.h"
#include "accel_owners.h"

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define ETH_P_MPLS_UC 0x8847
#define ETH_P_MPLS_MC 0x8848
#define ETH_P_PPP_SES 0x8864
#define ETH_ALEN 6
#define IP_MF_OFFSET 0x3fff
/* IPv6 extension headers (uapi/linux/in6.h, not in vmlinux.h). */
#define ACCEL_IP6_HOPOPTS 0
#define ACCEL_IP6_ROUTING 43
#define ACCEL_IP6_FRAGMENT 44
#define ACCEL_IP6_AH 51
#define ACCEL_IP6_DSTOPTS 60
/* More than this many IPv6 extension headers before TCP: not walked. */
#define ACCEL_IP6_EXT_MAX 6

/* The fields of one TCP (or UDP) packet the programs need. Addresses are
 * in the key form (IPv4 v4-mapped), ports in network byte order. */
struct accel_pkt {
	__u32 family;
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u8 syn;
	__u8 ack;
	/* IPv4 options or IPv6 extension headers before the TCP header. */
	__u8 ip_options;
	__u8 pad;
	/* Offsets of the IP and TCP headers in the packet. */
	__u16 l3_off;
	__u16 l4_off;
};

/* What accel_parse found. */
enum accel_parsed {
	/* A TCP packet, its fields in struct accel_pkt. */
	ACCEL_PARSED_TCP = 0,
	/* Not TCP (or not IP): not ours. */
	ACCEL_PARSED_OTHER,
	/* Possibly TCP, but its TCP header or its destination cannot be known
	 * safely: from the cgroup, it is dropped. */
	ACCEL_PARSED_OPAQUE,
	/* A UDP packet (not a fragment): addresses and ports in struct
	 * accel_pkt. */
	ACCEL_PARSED_UDP,
};

/* Protocols that carry other packets the program does not open. */
static __always_inline int accel_encapsulates(__u8 proto)
{
	return proto == IPPROTO_IPIP || proto == IPPROTO_IPV6 || proto == IPPROTO_GRE || proto == IPPROTO_ESP ||
	       proto == IPPROTO_MPLS;
}

static __always_inline int accel_ip6_ext(__u8 next)
{
	return next == ACCEL_IP6_HOPOPTS || next == ACCEL_IP6_ROUTING || next == ACCEL_IP6_FRAGMENT ||
	       next == ACCEL_IP6_AH || next == ACCEL_IP6_DSTOPTS;
}

/* An upper-layer protocol that is not TCP: opaque if it may carry TCP. */
static __always_inline int accel_not_tcp(__u8 proto)
{
	return accel_encapsulates(proto) || accel_ip6_ext(proto) ? ACCEL_PARSED_OPAQUE : ACCEL_PARSED_OTHER;
}

/* Walk the IPv6 extension headers from *off (next: the first one's type) to
 * the TCP header. Routing headers are walked only to learn what they carry:
 * with one, the header's destination is only the next hop. */
static __always_inline int accel_ip6_walk(struct __sk_buff *skb, __u8 next, __u32 *off, __u8 *last)
{
	struct {
		__u8 next;
		__u8 len;
	} ext;
	int routed = 0;

	for (int i = 0; i < ACCEL_IP6_EXT_MAX; i++) {
		if (!accel_ip6_ext(next))
			break;
		if (bpf_skb_load_bytes(skb, *off, &ext, sizeof(ext)))
			return ACCEL_PARSED_OPAQUE;
		/* A fragment: what it carries is not all here. */
		if (next == ACCEL_IP6_FRAGMENT)
			return ext.next == IPPROTO_TCP ? ACCEL_PARSED_OPAQUE : accel_not_tcp(ext.next);
		if (next == ACCEL_IP6_ROUTING)
			routed = 1;
		*off += next == ACCEL_IP6_AH ? ((__u32)ext.len + 2) * 4 : ((__u32)ext.len + 1) * 8;
		next = ext.next;
	}
	*last = next;
	if (next == IPPROTO_UDP)
		return routed ? ACCEL_PARSED_OTHER : ACCEL_PARSED_UDP;
	if (next != IPPROTO_TCP)
		return accel_not_tcp(next);
	return routed ? ACCEL_PARSED_OPAQUE : ACCEL_PARSED_TCP;
}

/* Parse the packet whose IP header starts at l3, of link-layer protocol
 * proto (network order, as skb->protocol). */
static __always_inline int accel_parse_l3(struct __sk_buff *skb, __u16 proto, __u32 l3, struct accel_pkt *p)
{
	struct tcphdr tcp;
	__u8 l4proto;
	__u32 l4;

	p->l3_off = l3;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, l3, &ip, sizeof(ip)))
			return ACCEL_PARSED_OPAQUE;
		l4proto = ip.protocol;
		if (l4proto != IPPROTO_TCP && l4proto != IPPROTO_UDP)
			return accel_not_tcp(l4proto);
		if (ip.ihl < 5 || (ip.frag_off & bpf_htons(IP_MF_OFFSET)))
			return l4proto == IPPROTO_TCP ? ACCEL_PARSED_OPAQUE : ACCEL_PARSED_OTHER;
		p->family = AF_INET;
		p->ip_options = ip.ihl > 5;
		l4 = l3 + (__u32)ip.ihl * 4;
		accel_ip4_to_mapped(p->saddr, ip.saddr);
		accel_ip4_to_mapped(p->daddr, ip.daddr);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		int rc;

		if (bpf_skb_load_bytes(skb, l3, &ip6, sizeof(ip6)))
			return ACCEL_PARSED_OPAQUE;
		l4 = l3 + sizeof(ip6);
		rc = accel_ip6_walk(skb, ip6.nexthdr, &l4, &l4proto);
		if (rc != ACCEL_PARSED_TCP && rc != ACCEL_PARSED_UDP)
			return rc;
		p->family = AF_INET6;
		p->ip_options = ip6.nexthdr != l4proto;
		accel_copy_ip(p->saddr, ip6.saddr.in6_u.u6_addr32);
		accel_copy_ip(p->daddr, ip6.daddr.in6_u.u6_addr32);
	} else if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD) ||
		   proto == bpf_htons(ETH_P_MPLS_UC) || proto == bpf_htons(ETH_P_MPLS_MC) ||
		   proto == bpf_htons(ETH_P_PPP_SES)) {
		return ACCEL_PARSED_OPAQUE;
	} else {
		return ACCEL_PARSED_OTHER;
	}
	if (l4proto == IPPROTO_UDP) {
		struct udphdr udp;

		if (l4 > 0xffff || bpf_skb_load_bytes(skb, l4, &udp, sizeof(udp)))
			return ACCEL_PARSED_OTHER;
		p->l4_off = l4;
		p->sport = udp.source;
		p->dport = udp.dest;
		p->syn = 0;
		p->ack = 0;
		return ACCEL_PARSED_UDP;
	}
	if (l4 > 0xffff || bpf_skb_load_bytes(skb, l4, &tcp, sizeof(tcp)))
		return ACCEL_PARSED_OPAQUE;
	p->l4_off = l4;
	p->sport = tcp.source;
	p->dport = tcp.dest;
	p->syn = tcp.syn;
	p->ack = tcp.ack;
	return ACCEL_PARSED_TCP;
}

static __always_inline struct accel_tproxy_config *accel_tp_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&accel_tproxy_config, &zero);
}

static __always_inline int accel_rule_matches(const struct accel_tproxy_config *cfg, const struct accel_pkt *p)
{
	__u32 port = bpf_ntohs(p->dport);

	for (__u32 i = 0; i < ACCEL_RULES_MAX; i++) {
		struct accel_intercept_rule *r;
		__u32 idx = i;

		if (i >= cfg->rule_count)
			break;
		r = bpf_map_lookup_elem(&accel_tproxy_rules, &idx);
		if (!r)
			break;
		if (port < r->port_min || port > r->port_max)
			continue;
		if ((p->daddr[0] & r->mask[0]) == r->ip[0] && (p->daddr[1] & r->mask[1]) == r->ip[1] &&
		    (p->daddr[2] & r->mask[2]) == r->ip[2] && (p->daddr[3] & r->mask[3]) == r->ip[3])
			return 1;
	}
	return 0;
}

/* From the attached cgroup, and not from below a deeper attachment (or a
 * running self-test), which owns its sockets with its own settings:
 * interception or none (accel_owners.h). Deeper than the walk goes: ours,
 * so that nothing leaves unmatched. */
static __always_inline int accel_from_cgroup(struct __sk_buff *skb, const struct accel_tproxy_config *cfg)
{
	if (bpf_skb_ancestor_cgroup_id(skb, cfg->cgroup_level) != cfg->cgroup_id)
		return 0;
	for (__u32 i = 1; i <= ACCEL_OWNER_DEPTH_MAX; i++) {
		__u64 id = bpf_skb_ancestor_cgroup_id(skb, cfg->cgroup_level + i);

		if (!id)
			return 1;
		if (bpf_map_lookup_elem(&accel_owners, &id))
			return 0;
	}
	return 1;
}

#endif /* ACCEL_TPROXY_MATCH_H */
