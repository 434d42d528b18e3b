// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Listening sockets that existed before sockops.c was attached: it never saw
 * them start listening, so they are not in accel_listeners, and local
 * connections to them would stay on the normal path until the service
 * listened again. Two iter/tcp programs over the TCP sockets of the network
 * namespace the iterator is read in:
 *
 *  - accel_iter_listeners_list writes one struct accel_listener_rec per
 *    listening socket this attachment has not recorded (no `listener` mark
 *    in accel_sk_state, which sockops.c sets on every listener it records),
 *    with its cgroup id, for user space to pick the attached cgroup's own;
 *  - accel_iter_listeners_adopt takes those whose cookie user space put in
 *    accel_adopt: it sets BPF_SOCK_OPS_STATE_CB_FLAG (bpf_setsockopt,
 *    TCP_BPF_SOCK_OPS_CB_FLAGS, kernel 6.10+) so that sockops.c sees the
 *    socket close, marks it, and records it in accel_listeners as sockops.c
 *    would. A marked socket is skipped, so running it twice, or over a
 *    listener sockops.c recorded meanwhile, counts nothing twice.
 */
#include "accel_common.h"
#include "accel_maps.h"
#include "accel_key.h"

#define TCP_LISTEN_STATE 10
#define SOL_TCP 6

/* Cookies of the listeners to adopt, filled by user space for one run:
 * not pinned, it goes with the object. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ACCEL_LISTENERS_MAX);
	__type(key, __u64);
	__type(value, __u32);
} accel_adopt SEC(".maps");

/* A listener this attachment has not recorded: its tcp_sock, or NULL. */
static __always_inline struct tcp_sock *accel_untracked_listener(struct sock_common *skc)
{
	struct accel_sock_state *st;
	struct tcp_sock *tp;

	if (!skc || skc->skc_state != TCP_LISTEN_STATE)
		return NULL;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return NULL;
	st = bpf_sk_storage_get(&accel_sk_state, tp, 0, 0);
	return st && st->listener ? NULL : tp;
}

/* The listening address in the key form sockops.c uses. */
static __always_inline void accel_listener_ip(struct sock_common *skc, __u32 *ip)
{
	if (skc->skc_family == AF_INET) {
		accel_ip4_to_mapped(ip, skc->skc_rcv_saddr);
	} else {
		ip[0] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[0];
		ip[1] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[1];
		ip[2] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[2];
		ip[3] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[3];
	}
}

SEC("iter/tcp")
int accel_iter_listeners_list(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_sock *tp = accel_untracked_listener(skc);
	struct accel_listener_rec rec = {};
	struct cgroup *cgrp;

	if (!tp)
		return 0;
	cgrp = tp->inet_conn.icsk_inet.sk.sk_cgrp_data.cgroup;
	if (!cgrp)
		return 0;
	rec.cookie = bpf_get_socket_cookie(tp);
	rec.cgroup_id = cgrp->kn->id;
	rec.port = skc->skc_num;
	accel_listener_ip(skc, rec.ip);
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}

SEC("iter/tcp")
int accel_iter_listeners_adopt(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_sock *tp = accel_untracked_listener(skc);
	struct accel_sock_state *st;
	struct accel_listen_key lk;
	__u32 ip[4];
	__u64 cookie;
	int flags = 0;

	if (!tp)
		return 0;
	cookie = bpf_get_socket_cookie(tp);
	if (!bpf_map_lookup_elem(&accel_adopt, &cookie))
		return 0;
	/* sockops.c must see it close, and know it as recorded. */
	if (bpf_getsockopt(tp, SOL_TCP, TCP_BPF_SOCK_OPS_CB_FLAGS, &flags, sizeof(flags)))
		return 0;
	flags |= BPF_SOCK_OPS_STATE_CB_FLAG;
	if (bpf_setsockopt(tp, SOL_TCP, TCP_BPF_SOCK_OPS_CB_FLAGS, &flags, sizeof(flags)))
		return 0;
	st = bpf_sk_storage_get(&accel_sk_state, tp, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return 0;
	st->listener = 1;
	accel_listener_ip(skc, ip);
	accel_fill_listen_key(&lk, skc->skc_net.net->net_cookie, skc->skc_num, ip, skc->skc_family);
	accel_listener_add(&lk);
	/* What user space reads back: the listeners adopted. */
	bpf_seq_write(ctx->meta->seq, &cookie, sizeof(cookie));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
