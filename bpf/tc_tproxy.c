// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Transparent interception without iptables: the two halves of one hook.
 *
 * accel_tc_egress (clsact egress of the interface the application talks
 * through): a TCP SYN from the attached cgroup whose destination matches an
 * intercept rule starts a steered flow (accel_tproxy_flows); every packet of
 * a steered flow is marked and redirected to the ingress of lo, with the
 * destination MAC rewritten to lo's (all zeros), otherwise lo would take the
 * frame for another host's and IP input would drop it. Attached to lo
 * itself (connections to a local address), the packet is only marked: it
 * is headed for lo's ingress already.
 *
 * accel_tc_lo_ingress (clsact ingress of lo): a marked packet is handed with
 * bpf_sk_assign() to the socket that must receive it: the proxy's accepted
 * socket for that 4-tuple when there is one, else, for a SYN only, the
 * listener an accel proxy registered for the proxy port in this network
 * namespace (accel_proxy_maps.h), never whatever else listens there. The
 * kernel then delivers it to that socket although its destination is the
 * original server; the ip rule on the mark supplies the local route this
 * needs. The proxy's answers go to the application's local address through
 * lo and need nothing from us.
 *
 * Fail closed. Whatever is not ours continues unchanged (TC_ACT_UNSPEC lets
 * other filters of the host run after this one), but nothing from the
 * attached cgroup gets past the egress program unmatched: IPv4 options and
 * the IPv6 extension headers that do not change the destination (hop-by-
 * hop, destination options, AH) are walked and such a SYN is steered like
 * any other; a packet of the cgroup whose TCP header or destination cannot
 * be known safely (TCP in IP fragments, behind an IPv6 routing header,
 * inside an IP tunnel or ESP, a VLAN, MPLS or PPPoE frame) is dropped and
 * counted (unparsed_dropped); a SYN that finds the flow map full is dropped
 * and counted (flows_full), so the connections already steered keep their
 * flows. No SYN of the cgroup leaves without its real destination having
 * been matched against the rules.
 *
 * A flow lives until the application's socket closes (sockops.c then moves
 * it to accel_tproxy_closed, where the socket's last packets still find
 * it); a new SYN on the same 4-tuple decides afresh.
 */
#include "accel_common.h"
#include "accel_maps.h"
#include "accel_proxy_maps.h"
#include "accel_key.h"
#include "accel_owners.h"

#define TC_ACT_UNSPEC (-1)
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
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

/* The flows being steered (see accel_maps.h): made when this object is
 * loaded, sized by attach --max-flows, then put in accel_tproxy_flows_slot
 * for sockops.c. Its definition must match struct accel_tproxy_flows_map. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, ACCEL_FLOWS_MAX);
	__type(key, struct accel_sock_key);
	__type(value, struct accel_tproxy_flow);
} accel_tproxy_flows SEC(".maps");

/* The fields of one TCP packet the two programs need. Addresses are in the
 * key form (IPv4 v4-mapped), ports in network byte order. */
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
static __always_inline int accel_ip6_walk(struct __sk_buff *skb, __u8 next, __u32 *off)
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
	if (next != IPPROTO_TCP)
		return accel_not_tcp(next);
	return routed ? ACCEL_PARSED_OPAQUE : ACCEL_PARSED_TCP;
}

static __always_inline int accel_parse(struct __sk_buff *skb, struct accel_pkt *p)
{
	struct tcphdr tcp;
	__u16 proto;
	__u32 l4;

	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)))
		return ACCEL_PARSED_OTHER;
	p->l3_off = ETH_HLEN;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
			return ACCEL_PARSED_OPAQUE;
		if (ip.protocol != IPPROTO_TCP)
			return accel_not_tcp(ip.protocol);
		if (ip.ihl < 5 || (ip.frag_off & bpf_htons(IP_MF_OFFSET)))
			return ACCEL_PARSED_OPAQUE;
		p->family = AF_INET;
		p->ip_options = ip.ihl > 5;
		l4 = ETH_HLEN + (__u32)ip.ihl * 4;
		accel_ip4_to_mapped(p->saddr, ip.saddr);
		accel_ip4_to_mapped(p->daddr, ip.daddr);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		int rc;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)))
			return ACCEL_PARSED_OPAQUE;
		l4 = ETH_HLEN + sizeof(ip6);
		rc = accel_ip6_walk(skb, ip6.nexthdr, &l4);
		if (rc != ACCEL_PARSED_TCP)
			return rc;
		p->family = AF_INET6;
		p->ip_options = ip6.nexthdr != IPPROTO_TCP;
		accel_copy_ip(p->saddr, ip6.saddr.in6_u.u6_addr32);
		accel_copy_ip(p->daddr, ip6.daddr.in6_u.u6_addr32);
	} else if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD) ||
		   proto == bpf_htons(ETH_P_MPLS_UC) || proto == bpf_htons(ETH_P_MPLS_MC) ||
		   proto == bpf_htons(ETH_P_PPP_SES)) {
		return ACCEL_PARSED_OPAQUE;
	} else {
		return ACCEL_PARSED_OTHER;
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

/* The flow as the application's socket sees it (same form as sockops.c). */
static __always_inline void accel_flow_key(struct __sk_buff *skb, const struct accel_pkt *p, struct accel_sock_key *key)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->netns = bpf_get_netns_cookie(skb);
	key->family = p->family;
	key->local_port = bpf_ntohs(p->sport);
	key->remote_port = bpf_ntohs(p->dport);
	accel_copy_ip(key->local_ip, p->saddr);
	accel_copy_ip(key->remote_ip, p->daddr);
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

/* This 4-tuple is not (or no longer) steered. */
static __always_inline void accel_forget(const struct accel_sock_key *key)
{
	bpf_map_delete_elem(&accel_tproxy_flows, key);
	bpf_map_delete_elem(&accel_tproxy_closed, key);
}

SEC("tc")
int accel_tc_egress(struct __sk_buff *skb)
{
	struct accel_tproxy_config *cfg = accel_tp_config();
	static const __u8 lo_mac[ETH_ALEN] = {};
	struct accel_sock_key key;
	struct accel_pkt p;
	int parsed;

	if (!cfg || !cfg->proxy_port)
		return TC_ACT_UNSPEC;
	parsed = accel_parse(skb, &p);
	if (parsed != ACCEL_PARSED_TCP) {
		if (parsed == ACCEL_PARSED_OPAQUE && accel_from_cgroup(skb, cfg)) {
			accel_tp_count(ACCEL_TP_UNPARSED_DROPPED);
			return TC_ACT_SHOT;
		}
		return TC_ACT_UNSPEC;
	}
	accel_tp_count(ACCEL_TP_PACKETS_SEEN);
	accel_flow_key(skb, &p, &key);

	if (p.syn && !p.ack) {
		/* A new connection: the decision is taken here, once. */
		if (skb->mark == cfg->proxy_mark) {
			accel_tp_count(ACCEL_TP_PROXY_SKIPPED);
			accel_forget(&key);
			return TC_ACT_UNSPEC;
		}
		if (!accel_from_cgroup(skb, cfg) || !accel_rule_matches(cfg, &p)) {
			accel_forget(&key);
			return TC_ACT_UNSPEC;
		}
		struct accel_tproxy_flow flow = { .proxy_port = cfg->proxy_port };

		/* Full (or out of memory): refuse the new connection rather than
		 * let it out unsteered or push a live flow out. */
		if (bpf_map_update_elem(&accel_tproxy_flows, &key, &flow, BPF_ANY)) {
			accel_tp_count(ACCEL_TP_FLOWS_FULL);
			return TC_ACT_SHOT;
		}
		bpf_map_delete_elem(&accel_tproxy_closed, &key);
		accel_tp_count(ACCEL_TP_SYN_INTERCEPTED);
		if (p.ip_options)
			accel_tp_count(ACCEL_TP_SYN_IP_OPTIONS);
	} else if (!bpf_map_lookup_elem(&accel_tproxy_flows, &key) &&
		   !bpf_map_lookup_elem(&accel_tproxy_closed, &key)) {
		return TC_ACT_UNSPEC;
	}

	skb->mark = cfg->intercept_mark;
	accel_tp_count(ACCEL_TP_PACKETS_INTERCEPTED);
	/* Attached to lo itself (a local destination): the packet is already on
	 * its way to lo's ingress with its route, which a redirect would drop;
	 * a 127/8 destination then arrives without one and is a martian. */
	if (skb->ifindex == cfg->lo_ifindex)
		return TC_ACT_OK;
	/* A steered packet never goes out as it is. */
	if (bpf_skb_store_bytes(skb, 0, lo_mac, ETH_ALEN, 0))
		return TC_ACT_SHOT;
	return bpf_redirect(cfg->lo_ifindex, BPF_F_INGRESS);
}

static __always_inline struct bpf_sock *accel_lookup(struct __sk_buff *skb, const struct accel_pkt *p,
						     const __u32 *daddr, __u16 dport)
{
	struct bpf_sock_tuple t = {};

	if (p->family == AF_INET) {
		t.ipv4.saddr = p->saddr[3];
		t.ipv4.daddr = daddr[3];
		t.ipv4.sport = p->sport;
		t.ipv4.dport = dport;
		return (struct bpf_sock *)bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	}
	accel_copy_ip(t.ipv6.saddr, p->saddr);
	accel_copy_ip(t.ipv6.daddr, daddr);
	t.ipv6.sport = p->sport;
	t.ipv6.dport = dport;
	return (struct bpf_sock *)bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
}

static __always_inline int accel_assign(struct __sk_buff *skb, struct bpf_sock *sk, enum accel_tproxy_counter ok)
{
	long err = bpf_sk_assign(skb, sk, 0);

	bpf_sk_release(sk);
	accel_tp_count(err ? ACCEL_TP_ASSIGN_FAILED : ok);
	return TC_ACT_OK;
}

#define TCP_SEQ_OFF 4
#define TCP_FLAGS_OFF 12
#define TCP_CSUM_OFF 16
#define TCP_FLAG_RST_ACK 0x14

/*
 * Answer a SYN nobody can take (the proxy is gone) with a RST: the SYN is
 * turned around in place and delivered back to the client, which fails with
 * ECONNREFUSED at once instead of retransmitting for a minute. The kernel
 * cannot send this reset itself: its source would be the original
 * destination, which is not a local address. Swapping addresses and ports
 * leaves both checksums unchanged; seq, ack_seq and the flags are patched
 * into the TCP checksum.
 */
static __always_inline int accel_refuse(struct __sk_buff *skb, const struct accel_pkt *p)
{
	__u32 old_seq, new_seq = 0, old_ack, new_ack;
	__u16 old_flags, new_flags;
	__u32 ip_src, l4 = p->l4_off;

	if (bpf_skb_load_bytes(skb, l4 + TCP_SEQ_OFF, &old_seq, 4) ||
	    bpf_skb_load_bytes(skb, l4 + TCP_SEQ_OFF + 4, &old_ack, 4) ||
	    bpf_skb_load_bytes(skb, l4 + TCP_FLAGS_OFF, &old_flags, 2))
		return TC_ACT_SHOT;
	new_ack = bpf_htonl(bpf_ntohl(old_seq) + 1);
	new_flags = (old_flags & bpf_htons(0xff00)) | bpf_htons(TCP_FLAG_RST_ACK);

	if (p->family == AF_INET) {
		ip_src = p->l3_off + offsetof(struct iphdr, saddr);
		if (bpf_skb_store_bytes(skb, ip_src, &p->daddr[3], 4, 0) ||
		    bpf_skb_store_bytes(skb, ip_src + 4, &p->saddr[3], 4, 0))
			return TC_ACT_SHOT;
	} else {
		ip_src = p->l3_off + offsetof(struct ipv6hdr, saddr);
		if (bpf_skb_store_bytes(skb, ip_src, p->daddr, 16, 0) ||
		    bpf_skb_store_bytes(skb, ip_src + 16, p->saddr, 16, 0))
			return TC_ACT_SHOT;
	}
	if (bpf_skb_store_bytes(skb, l4, &p->dport, 2, 0) || bpf_skb_store_bytes(skb, l4 + 2, &p->sport, 2, 0))
		return TC_ACT_SHOT;
	if (bpf_l4_csum_replace(skb, l4 + TCP_CSUM_OFF, old_seq, new_seq, 4) ||
	    bpf_l4_csum_replace(skb, l4 + TCP_CSUM_OFF, old_ack, new_ack, 4) ||
	    bpf_l4_csum_replace(skb, l4 + TCP_CSUM_OFF, old_flags, new_flags, 2))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, l4 + TCP_SEQ_OFF, &new_seq, 4, 0) ||
	    bpf_skb_store_bytes(skb, l4 + TCP_SEQ_OFF + 4, &new_ack, 4, 0) ||
	    bpf_skb_store_bytes(skb, l4 + TCP_FLAGS_OFF, &new_flags, 2, 0))
		return TC_ACT_SHOT;
	/* Unsteered from here on. It goes on up this same ingress: IP routes
	 * it (it carries no route when it came redirected from another
	 * interface) and delivers it to the client's socket. Not redirected to
	 * lo again: a redirect drops the route a SYN sent on lo itself still
	 * carries (--iface lo), and 127.0.0.1 -> 127.0.0.1 without one is a
	 * martian; the reset was lost and the client hung. */
	skb->mark = 0;
	return TC_ACT_OK;
}

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/*
 * The cookie of the network namespace the packet is in (that of lo), as
 * SO_NETNS_COOKIE reports it for a socket there. Not bpf_get_netns_cookie():
 * in tc it reads skb->sk, which a packet arriving on lo no longer has, and
 * then answers with the initial namespace's.
 */
static __always_inline __u64 accel_skb_netns(struct __sk_buff *skb)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);

	return kskb->dev->nd_net.net->net_cookie;
}

/* Is some socket listening on the proxy port of the loopback address (one
 * no proxy registered, as the caller found none)? Only counted. */
static __always_inline int accel_foreign_listener(struct __sk_buff *skb, const struct accel_pkt *p, __u32 port)
{
	__u32 loopback[4] = {};
	struct bpf_sock *sk;
	int listening;

	if (p->family == AF_INET)
		accel_ip4_to_mapped(loopback, bpf_htonl(0x7f000001));
	else
		loopback[3] = bpf_htonl(1);
	sk = accel_lookup(skb, p, loopback, bpf_htons((__u16)port));
	if (!sk)
		return 0;
	listening = sk->state == BPF_TCP_LISTEN;
	bpf_sk_release(sk);
	return listening;
}

SEC("tc")
int accel_tc_lo_ingress(struct __sk_buff *skb)
{
	struct accel_tproxy_config *cfg = accel_tp_config();
	struct accel_proxy_key pk = {};
	struct bpf_sock *sk;
	struct accel_pkt p;

	if (!cfg || !cfg->intercept_mark || skb->mark != cfg->intercept_mark || accel_parse(skb, &p))
		return TC_ACT_UNSPEC;

	/* A packet of a connection the proxy already accepted. */
	sk = accel_lookup(skb, &p, p.daddr, p.dport);
	if (sk) {
		if (sk->state != BPF_TCP_LISTEN)
			return accel_assign(skb, sk, ACCEL_TP_ASSIGNED_ESTABLISHED);
		bpf_sk_release(sk);
	}
	if (!p.syn || p.ack)
		return TC_ACT_UNSPEC;

	/* A new connection: the listener a proxy registered, and no other.
	 * Looked up by key, not by address, so that a socket someone else
	 * binds to the port while the proxy is down (or restarting) is never
	 * handed the cgroup's connections. */
	pk.netns = accel_skb_netns(skb);
	pk.family = p.family;
	pk.port = cfg->proxy_port;
	sk = bpf_map_lookup_elem(&accel_proxy_listeners, &pk);
	if (sk && sk->state != BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		sk = NULL;
	}
	if (!sk) {
		/* No proxy: refuse rather than let the client hang, and never
		 * let the connection reach its destination unchecked. */
		accel_tp_count(ACCEL_TP_NO_LISTENER);
		if (accel_foreign_listener(skb, &p, cfg->proxy_port))
			accel_tp_count(ACCEL_TP_FOREIGN_LISTENER);
		return accel_refuse(skb, &p);
	}
	accel_assign(skb, sk, ACCEL_TP_ASSIGNED_LISTENER);
	/* Tell sockops.c whether the proxy runs in the attached cgroup. The
	 * listener is now skb->sk, which is what the cgroup helper reads. */
	if (bpf_skb_ancestor_cgroup_id(skb, cfg->cgroup_level) == cfg->cgroup_id) {
		struct accel_tproxy_flow *flow;
		struct accel_sock_key key;

		accel_flow_key(skb, &p, &key);
		flow = bpf_map_lookup_elem(&accel_tproxy_flows, &key);
		if (flow)
			flow->proxy_in_cgroup = 1;
	}
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
