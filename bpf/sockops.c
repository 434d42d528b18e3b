// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * SOCK_OPS program attached to the service's cgroup. It puts a TCP socket of
 * the cgroup into accel_sock_hash, keyed by its own view of the connection,
 * when both ends of the connection are sockets of the cgroup on this host;
 * skmsg.c then finds a socket's peer under the reversed key.
 *
 * Why both ends, never one: a socket in a SOCKHASH that receives bytes by
 * the normal TCP path (its peer is not redirecting) reports FIONREAD == 0
 * and misses wake-ups on kernels with commit 929e30f93125 (6.18.14+ and
 * others). Keeping such sockets out of the map avoids that regression
 * without the SK_SKB workaround, which has troubles of its own.
 *
 *  - A listening socket of the cgroup is recorded in accel_listeners (one
 *    that listened before this program was attached, by iter_listeners.c).
 *  - The connecting (active) side goes in only if its destination is a local
 *    address on which the cgroup listens.
 *  - The accepting (passive) side goes in only if its peer went in; if not,
 *    a peer left behind is taken out again.
 *  - A connection steered to the proxy by tc_tproxy.c (accel_tproxy_flows)
 *    counts as local: the application's socket goes in if tc_tproxy.c
 *    handed the SYN to a proxy listener of the cgroup, the proxy's accepted
 *    socket (whose local address is the original destination) if the
 *    application's socket went in.
 *  - A socket of the cgroup that carries a mark and connects to another host
 *    (accel proxy's upstream socket) is recorded in accel_upstreams, never
 *    inserted: the proxy inserts it for an egress shortcut (accel_shortcut.h).
 *  - Entries of closed sockets leave accel_members/accel_listeners on the
 *    state change to TCP_CLOSE (the SOCKHASH drops them by itself).
 *  - Nested attachments (accel_owners.h): a socket of a cgroup below a
 *    deeper attachment is that one's; this program neither inserts nor
 *    records it, and takes its peer out of this map if it went in.
 *  - While an interception is installed, every connecting socket of the
 *    cgroup asks for that state change too: when the application's socket
 *    of a steered flow closes, its flow moves from accel_tproxy_flows to
 *    accel_tproxy_closed, so live flows are never crowded out by dead ones.
 *    The interception's maps are reached through the fast path's slots
 *    (accel_intercept_flows.h), empty without an interception.
 */
#include "accel_common.h"
#include "accel_maps.h"
#include "accel_key.h"
#include "accel_owners.h"
#include "accel_intercept_flows.h"

#define TCP_CLOSE_STATE 7
#define TCP_LISTEN_STATE 10

/* Is this socket this attachment's, not a deeper one's? */
static __always_inline int accel_mine(struct bpf_sock_ops *skops)
{
	struct accel_config *cfg = accel_get_config();

	return accel_owns(skops->sk, cfg ? cfg->cgroup_id : 0);
}

static __always_inline int accel_port_bypassed(__u32 port)
{
	return bpf_map_lookup_elem(&accel_bypass, &port) != NULL;
}

static __always_inline void accel_listen_key(struct accel_listen_key *lk, const struct accel_sock_key *key, int remote)
{
	accel_fill_listen_key(lk, key->netns, remote ? key->remote_port : key->local_port,
			      remote ? key->remote_ip : key->local_ip, key->family);
}

/* Is the destination of an outgoing connection a listener of the cgroup?
 * An IPv4 destination is served by an IPv4 listener, or by an IPv6 one on
 * its v4-mapped address or on :: (dual-stack); an IPv6 destination only by
 * an IPv6 listener: a cgroup listener on 0.0.0.0:P says nothing about
 * [::1]:P, which another process may hold. */
static __always_inline int accel_dest_listens(const struct accel_sock_key *key)
{
	struct accel_listen_key lk;

	accel_listen_key(&lk, key, 1);
	if (bpf_map_lookup_elem(&accel_listeners, &lk))
		return 1;
	if (key->family == AF_INET) {
		lk.family = AF_INET6;
		if (bpf_map_lookup_elem(&accel_listeners, &lk))
			return 1;
		lk.family = AF_INET;
	}
	__builtin_memset(lk.ip, 0, sizeof(lk.ip));
	if (bpf_map_lookup_elem(&accel_listeners, &lk))
		return 1;
	if (key->family != AF_INET)
		return 0;
	lk.family = AF_INET6;
	return bpf_map_lookup_elem(&accel_listeners, &lk) != NULL;
}

static __always_inline void accel_on_listen(struct bpf_sock_ops *skops)
{
	struct accel_sock_key key;
	struct accel_listen_key lk;
	struct accel_sock_state *st;
	struct bpf_sock *sk = skops->sk;

	if (!sk || ACCEL_KEY_FROM_CTX(skops, &key, 0, bpf_get_netns_cookie(skops)))
		return;
	if (!accel_mine(skops)) {
		accel_count(ACCEL_CNT_SOCK_SKIPPED_NESTED, 1);
		return;
	}
	/* Marked first: without the mark, its close would not take the
	 * record back. */
	st = bpf_sk_storage_get(&accel_sk_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return;
	st->listener = 1;
	accel_listen_key(&lk, &key, 0);
	accel_listener_add(&lk);
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

static __always_inline void accel_on_close(struct bpf_sock_ops *skops, __u32 old_state)
{
	struct bpf_sock *sk = skops->sk;
	struct accel_sock_state *st;
	struct accel_sock_key key;
	__u64 cookie;

	if (ACCEL_KEY_FROM_CTX(skops, &key, 0, bpf_get_netns_cookie(skops)))
		return;
	/* Most sockets have none (skmsg.c makes it at a first hold). */
	st = sk ? bpf_sk_storage_get(&accel_sk_state, sk, 0, 0) : NULL;
	if (old_state == TCP_LISTEN_STATE) {
		struct accel_listen_key lk;

		/* Only a listener this attachment recorded (its flag may be left
		 * from an earlier attachment). */
		if (!st || !st->listener)
			return;
		st->listener = 0;
		accel_listen_key(&lk, &key, 0);
		accel_listener_del(&lk);
		return;
	}
	bpf_map_delete_elem(&accel_members, &key);
	/* Only a marked socket can have an upstream record. */
	if (sk && sk->mark)
		bpf_map_delete_elem(&accel_upstreams, &key);
	/* Only a socket whose peer is accel proxy's can have a shortcut, and
	 * only it has this flag. */
	if (st && (st->flags & ACCEL_ST_PROXY_FACING))
		bpf_map_delete_elem(&accel_shortcuts, &key);
	/* Only the stream verdict records a socket here, and only some: a
	 * lookup is lock-free, a delete takes the bucket's lock with
	 * interrupts off, which costs every closing connection
	 * (htab_lru_map_delete_elem in a cpu-clock profile of connrate). */
	cookie = bpf_get_socket_cookie(skops);
	if (bpf_map_lookup_elem(&accel_rx_seqs, &cookie))
		bpf_map_delete_elem(&accel_rx_seqs, &cookie);
	accel_flow_closed(&key);
}

/* Does this connecting socket carry a mark, as accel proxy's upstream
 * sockets do (accel proxy --mark, set by proxy_sock_create.c or by the
 * proxy itself)? Any mark: the fast path's object declares no map of the
 * interception's, so the proxy mark's value is not known here. A mark is
 * no privilege: a marked socket only makes its peer count its bytes and
 * look up a shortcut (accel_shortcut.h); a shortcut is made by the proxy
 * alone. A field read. */
static __always_inline int accel_proxy_marked(const struct bpf_sock *sk)
{
	return sk && sk->mark;
}

/* One of accel proxy's upstream sockets, connected to another host: its
 * address, cookie and snd_base are recorded in accel_upstreams for an
 * egress shortcut, which the proxy may give it (accel_shortcut.h); it does
 * not go in the map here. Its close takes the record back. */
static __always_inline void accel_record_upstream(struct bpf_sock_ops *skops, struct bpf_sock *sk,
						  const struct accel_sock_key *key)
{
	struct accel_member self = {};

	self.sk = (__u64)sk;
	self.cookie = bpf_get_socket_cookie(skops);
	self.snd_base = skops->snd_nxt;
	if (!bpf_map_update_elem(&accel_upstreams, key, &self, BPF_ANY))
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* This socket stays off the fast path; so does `peer`, if it went in. */
static __always_inline void accel_insert_failed(const struct accel_sock_key *peer)
{
	if (peer) {
		bpf_map_delete_elem(&accel_sock_hash, peer);
		bpf_map_delete_elem(&accel_members, peer);
	}
	accel_count(ACCEL_CNT_SOCK_INSERT_FAILED, 1);
}

static __always_inline void accel_on_established(struct bpf_sock_ops *skops, int passive)
{
	struct accel_sock_key key, peer;
	struct accel_tproxy_flow *flow = NULL;
	struct accel_member self = {};
	struct accel_member *peer_member;
	/* Read once: the verifier refuses a ctx pointer the compiler offsets
	 * once and dereferences at two places (sk->mark, self.sk). */
	struct bpf_sock *sk = skops->sk;
	int facing = 0;

	if (ACCEL_KEY_FROM_CTX(skops, &key, 0, bpf_get_netns_cookie(skops)))
		return;
	/* A deeper attachment's socket: its peer, if it went into this map
	 * (the client of a listener this attachment recorded before the
	 * deeper one was made), comes out again rather than sit there alone. */
	if (!accel_mine(skops)) {
		if (passive) {
			ACCEL_KEY_FROM_CTX(skops, &peer, 1, key.netns);
			bpf_map_delete_elem(&accel_sock_hash, &peer);
			bpf_map_delete_elem(&accel_members, &peer);
		}
		accel_count(ACCEL_CNT_SOCK_SKIPPED_NESTED, 1);
		return;
	}
	/* Steered first: when interception runs on lo (a local destination),
	 * the peer is local but it is the proxy, not the listener the
	 * destination names. */
	flow = accel_steered(skops, &key, passive);
	if (!flow && !accel_peer_is_local(&key)) {
		if (!passive && accel_proxy_marked(sk))
			accel_record_upstream(skops, sk, &key);
		accel_count(ACCEL_CNT_SOCK_SKIPPED_REMOTE, 1);
		return;
	}
	if (accel_port_bypassed(key.local_port) || accel_port_bypassed(key.remote_port)) {
		accel_count(ACCEL_CNT_SOCK_SKIPPED_BYPASS, 1);
		return;
	}
	/* Data that already moved (TCP Fast Open carries it in the SYN) sits in
	 * the normal queues; redirecting later bytes past it would reorder the
	 * stream. Such a socket stays off the fast path, and so does its peer. */
	if (skops->data_segs_out || skops->bytes_received) {
		accel_count(ACCEL_CNT_SOCK_SKIPPED_DATA, 1);
		return;
	}
	if (passive) {
		ACCEL_KEY_FROM_CTX(skops, &peer, 1, key.netns);
		peer_member = bpf_map_lookup_elem(&accel_members, &peer);
		if (!peer_member) {
			/* The peer is not of the cgroup, or gave up on the fast
			 * path (skmsg.c): if it sits in the map, take it out;
			 * nothing was ever redirected to it. */
			bpf_map_delete_elem(&accel_sock_hash, &peer);
			accel_count(ACCEL_CNT_SOCK_SKIPPED_PEER, 1);
			return;
		}
		facing = peer_member->flags & ACCEL_MEMBER_PROXY;
	} else if (flow ? !flow->proxy_in_cgroup : !accel_dest_listens(&key)) {
		accel_count(ACCEL_CNT_SOCK_SKIPPED_PEER, 1);
		return;
	} else if (flow) {
		facing = 1;
	} else if (accel_proxy_marked(sk)) {
		self.flags = ACCEL_MEMBER_PROXY;
	}

	/* Its address and cookie, for skmsg.c's look at a peer's receive
	 * queue (accel_backpressure.h). */
	self.sk = (__u64)sk;
	self.cookie = bpf_get_socket_cookie(skops);
	/* Nothing sent yet: the base of what it will queue to TCP. */
	self.snd_base = skops->snd_nxt;
	/* A socket with a ULP (kTLS, MPTCP) is refused by the map, and any
	 * socket by a full map or member set: it keeps the normal path, and so
	 * does its peer. The accepting side's peer went in already: it comes
	 * out again rather than sit in the map alone (nothing was redirected
	 * to or from it yet, as this socket was never in the map). */
	if (bpf_map_update_elem(&accel_members, &key, &self, BPF_ANY)) {
		accel_insert_failed(passive ? &peer : NULL);
		return;
	}
	if (bpf_sock_hash_update(skops, &accel_sock_hash, &key, BPF_NOEXIST)) {
		bpf_map_delete_elem(&accel_members, &key);
		accel_insert_failed(passive ? &peer : NULL);
		return;
	}
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	/* A socket whose peer is accel proxy's counts what it sends, from its
	 * first byte on, for a shortcut (accel_shortcut.h): the application's
	 * socket steered to a proxy of the cgroup, and the server's socket a
	 * proxy's upstream socket connected to. Its state is made here, before
	 * it can send; without it (allocation failed) it never takes one. */
	if (facing) {
		struct accel_sock_state *st;

		st = sk ? bpf_sk_storage_get(&accel_sk_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE) : NULL;
		if (st) {
			st->snd_base = skops->snd_nxt;
			st->flags |= ACCEL_ST_PROXY_FACING;
		}
	}
	accel_count(ACCEL_CNT_SOCK_INSERTED, 1);
}

SEC("sockops")
int accel_sockops(struct bpf_sock_ops *skops)
{
	accel_build_variant();
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		accel_on_listen(skops);
		break;
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		accel_on_connect(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		accel_on_established(skops, 0);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		accel_on_established(skops, 1);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == TCP_CLOSE_STATE)
			accel_on_close(skops, skops->args[0]);
		break;
	default:
		break;
	}
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
