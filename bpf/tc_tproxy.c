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
 * is headed for lo's ingress already. The proxies' own upstream SYNs are
 * skipped, known by the entry a proxy stored on the socket
 * (accel_proxy_sockets), never by their mark, which any process with
 * CAP_NET_RAW can set.
 *
 * accel_tc_lo_ingress (clsact ingress of lo): a marked packet is handed with
 * bpf_sk_assign() to the socket that must receive it: a SYN to the
 * listener an accel proxy registered for the proxy port in this network
 * namespace (accel_proxy_maps.h), never whatever else listens there nor a
 * socket (TIME_WAIT, say) that still holds its 4-tuple; any other packet to
 * the proxy's socket for that 4-tuple. The one exception: a SYN that finds
 * a proxy-side TIME_WAIT socket, when sk_lookup.c is attached, goes up
 * unassigned for the kernel to retire that socket, and sk_lookup.c hands
 * it to the proxy listener (accel_tproxy_tw). What the kernel does not take is
 * refused or dropped, never left to the normal lookup. The
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
 * flows. No SYN of the cgroup leaves a hooked device without its real
 * destination having been matched against the rules; cgroup_egress.c
 * drops a covered one that leaves by any other.
 *
 * A flow lives until the application's socket closes (sockops.c then moves
 * it to accel_tproxy_closed, where the socket's last packets still find
 * it); a new SYN on the same 4-tuple decides afresh.
 */
#include "accel_common.h"
#include "accel_intercept_maps.h"
#include "accel_proxy_maps.h"
#include "accel_key.h"
#include "accel_tproxy_match.h"

#define TC_ACT_UNSPEC (-1)
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
/* The flows being steered (see accel_intercept_maps.h): made when this
 * object is loaded, sized by attach --max-flows, then put in
 * accel_tproxy_flows_slot for sockops.c. Its definition must match struct
 * accel_tproxy_flows_map (accel_intercept_flows.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, ACCEL_FLOWS_MAX);
	__type(key, struct accel_sock_key);
	__type(value, struct accel_tproxy_flow);
} accel_tproxy_flows SEC(".maps");

/* The flow as the application's socket sees it (same form as sockops.c),
 * in the network namespace with cookie `netns`. */
static __always_inline void accel_flow_key(__u64 netns, const struct accel_pkt *p, struct accel_sock_key *key)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->netns = netns;
	key->family = p->family;
	key->local_port = bpf_ntohs(p->sport);
	key->remote_port = bpf_ntohs(p->dport);
	accel_copy_ip(key->local_ip, p->saddr);
	accel_copy_ip(key->remote_ip, p->daddr);
}

/* An Ethernet frame (lo's too): TCP or not, see accel_parse_l3. UDP is
 * not the tc programs' business (cgroup_egress.c refuses it). */
static __always_inline int accel_parse(struct __sk_buff *skb, struct accel_pkt *p)
{
	__u16 proto;
	int rc;

	if (bpf_skb_load_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)))
		return ACCEL_PARSED_OTHER;
	rc = accel_parse_l3(skb, proto, ETH_HLEN, p);
	return rc == ACCEL_PARSED_UDP ? ACCEL_PARSED_OTHER : rc;
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

	accel_build_variant();
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
	accel_flow_key(bpf_get_netns_cookie(skb), &p, &key);

	if (p.syn && !p.ack) {
		/* A new connection: the decision is taken here, once. */
		if (!accel_from_cgroup(skb, cfg) || !accel_rule_matches(cfg, &p)) {
			accel_forget(&key);
			return TC_ACT_UNSPEC;
		}
		/* The proxy's own upstream connection (when the proxy runs in the
		 * cgroup), known by the entry it stored on its socket, never by
		 * a mark: any process with CAP_NET_RAW can set SO_MARK. */
		if (accel_proxy_socket(skb)) {
			accel_tp_count(ACCEL_TP_PROXY_SKIPPED);
			accel_forget(&key);
			return TC_ACT_UNSPEC;
		}
		if (skb->mark == cfg->proxy_mark)
			accel_tp_count(ACCEL_TP_MARK_FORGED);
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

/* Hand the packet to sk (and release it); 0 when the kernel took it. */
static __always_inline long accel_assign(struct __sk_buff *skb, struct bpf_sock *sk, enum accel_tproxy_counter ok)
{
	long err = bpf_sk_assign(skb, sk, 0);

	bpf_sk_release(sk);
	accel_tp_count(err ? ACCEL_TP_ASSIGN_FAILED : ok);
	return err;
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

/* The key of accel_tproxy_tw: the 4-tuple as the proxy-side socket holds
 * it (local: the packet's destination), as sk_lookup.c builds it. */
static __always_inline void accel_tw_key(const struct accel_pkt *p, struct accel_sock_key *key)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->family = p->family;
	key->local_port = bpf_ntohs(p->dport);
	key->remote_port = bpf_ntohs(p->sport);
	accel_copy_ip(key->local_ip, p->daddr);
	accel_copy_ip(key->remote_ip, p->saddr);
}

/*
 * Does the proxy listener sk run in the attached cgroup (or below it), as
 * bpf_skb_ancestor_cgroup_id(skb, cfg->cgroup_level) answers once the SYN
 * is assigned to it? Asked of the socket itself where nothing is assigned:
 * tc programs may not call bpf_sk_ancestor_cgroup_id (6.18, "program of
 * this type cannot use helper"), so its cgroup (sk_cgrp_data, which an
 * accepted socket inherits) is read through bpf_rdonly_cast and walked up
 * as accel_owners.h does. A listener more than ACCEL_OWNER_DEPTH_MAX
 * levels below the cgroup is not known to be in it.
 */
static __always_inline int accel_listener_in_cgroup(struct bpf_sock *bsk, __u64 cgroup_id)
{
	struct sock *sk = bpf_rdonly_cast(bsk, bpf_core_type_id_kernel(struct sock));
	struct cgroup *cg = sk->sk_cgrp_data.cgroup;

	for (int i = 0; i <= ACCEL_OWNER_DEPTH_MAX; i++) {
		struct cgroup_subsys_state *parent;

		if (!cg)
			return 0;
		if (cg->kn->id == cgroup_id)
			return 1;
		parent = cg->self.parent;
		cg = parent ? parent->cgroup : NULL;
	}
	return 0;
}

/* Tell sockops.c that the proxy listener taking this SYN runs in the
 * attached cgroup, so that the application's side of the connection may
 * join the fast path: on the flow tc_egress made, never a new one. */
static __always_inline void accel_flow_proxy_in_cgroup(const struct accel_pkt *p, __u64 netns)
{
	struct accel_tproxy_flow *flow;
	struct accel_sock_key key;

	accel_flow_key(netns, p, &key);
	flow = bpf_map_lookup_elem(&accel_tproxy_flows, &key);
	if (flow)
		flow->proxy_in_cgroup = 1;
}

SEC("tc")
int accel_tc_lo_ingress(struct __sk_buff *skb)
{
	struct accel_tproxy_config *cfg = accel_tp_config();
	struct accel_proxy_key pk = {};
	int time_wait = 0, busy = 0;
	struct bpf_sock *sk;
	struct accel_pkt p;

	accel_build_variant();
	if (!cfg || !cfg->intercept_mark || skb->mark != cfg->intercept_mark || accel_parse(skb, &p))
		return TC_ACT_UNSPEC;

	sk = accel_lookup(skb, &p, p.daddr, p.dport);
	if (!p.syn || p.ack) {
		/* A packet of a connection the proxy already accepted. Should
		 * the kernel not take it, it is dropped, never left to the
		 * normal lookup (which finds the original destination's). */
		if (sk && sk->state != BPF_TCP_LISTEN)
			return accel_assign(skb, sk, ACCEL_TP_ASSIGNED_ESTABLISHED) ? TC_ACT_SHOT : TC_ACT_OK;
		if (sk)
			bpf_sk_release(sk);
		return TC_ACT_UNSPEC;
	}
	/* A SYN goes to the proxy's listener and nowhere else, even when a
	 * socket still holds its 4-tuple: given to a TIME_WAIT socket, the
	 * kernel retires it and looks up a listener for the packet's own
	 * destination, the original server (on this host, with --iface lo),
	 * which would accept it unchecked. Unless sk_lookup.c runs in that
	 * lookup (below), the listener gets it; while the old socket holds
	 * the 4-tuple, the kernel drops it (the client retries). */
	if (sk) {
		if (sk->state == BPF_TCP_TIME_WAIT)
			time_wait = 1;
		else if (sk->state != BPF_TCP_LISTEN && sk->state != BPF_TCP_NEW_SYN_RECV)
			busy = 1;
		bpf_sk_release(sk);
	}

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
	/* A TIME_WAIT socket holds the 4-tuple and sk_lookup.c is attached:
	 * the SYN goes up unassigned, the kernel retires the old socket as for
	 * any SYN, and sk_lookup.c gives the listener lookup that follows the
	 * proxy listener recorded here. Not recorded: dropped, never left to
	 * a lookup that would find the original server's. Whether that
	 * listener runs in the cgroup is told to sockops.c here, from the
	 * socket itself, as nothing is assigned (the flow's key by the lo
	 * namespace: skb->sk is NULL, see accel_skb_netns). sk_lookup.c finds
	 * the same listener under pk within this packet's own softirq. */
	if (time_wait && (cfg->flags & ACCEL_TP_F_SK_LOOKUP)) {
		int in_cgroup = accel_listener_in_cgroup(sk, cfg->cgroup_id);
		struct accel_sock_key tw;

		bpf_sk_release(sk);
		accel_tw_key(&p, &tw);
		if (bpf_map_update_elem(&accel_tproxy_tw, &tw, &pk, BPF_ANY)) {
			accel_tp_count(ACCEL_TP_TW_DROPPED);
			return TC_ACT_SHOT;
		}
		if (in_cgroup)
			accel_flow_proxy_in_cgroup(&p, pk.netns);
		accel_tp_count(ACCEL_TP_SYN_TW_RETIRED);
		return TC_ACT_OK;
	}
	if (time_wait || busy)
		accel_tp_count(ACCEL_TP_SYN_TUPLE_BUSY);
	/* Not taken: refused, never let through to the normal lookup. */
	if (accel_assign(skb, sk, ACCEL_TP_ASSIGNED_LISTENER))
		return accel_refuse(skb, &p);
	/* Tell sockops.c whether the proxy runs in the attached cgroup. The
	 * listener is now skb->sk, which is what the cgroup helper reads. */
	if (bpf_skb_ancestor_cgroup_id(skb, cfg->cgroup_level) == cfg->cgroup_id)
		accel_flow_proxy_in_cgroup(&p, pk.netns);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
