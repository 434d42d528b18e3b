// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * SK_MSG program attached to accel_sock_hash: a sendmsg on a socket of the
 * map lands straight in the receive queue of its peer socket when the peer
 * is in the map too and has room (accel_backpressure.h). Anything else (no
 * peer, redirect switched off, a peer that does not read) goes the normal
 * TCP way: SK_PASS, never SK_DROP. A socket accel proxy gave a shortcut
 * (accel_shortcut.h) sends to the shortcut's destination instead.
 */
#include "accel_common.h"
#include "accel_maps.h"
#include "accel_key.h"
#include "accel_backpressure.h"
#include "accel_cut.h"
#include "accel_shortcut.h"

/* What accel_decide (and each helper whose result it returns) did with the
 * message: left it to TCP (SK_PASS with no redirect of this run), or
 * redirected it. */
#define ACCEL_TO_TCP 0
#define ACCEL_REDIRECTED 1

static __always_inline int accel_passed(__u32 size)
{
	accel_count(ACCEL_CNT_MSG_PASSED, 1);
	accel_count(ACCEL_CNT_BYTES_PASSED, size);
	return ACCEL_TO_TCP;
}

/* For good: nothing of this socket is redirected any more. */
static __always_inline int accel_pass(struct sk_msg_md *msg, struct bpf_sock *sk)
{
	struct accel_sock_state *st;
	struct accel_sock_key self;

	/* Once one message took the TCP path, later ones must too: the peer
	 * reads its redirect queue before its TCP queue. */
	st = bpf_sk_storage_get(&accel_sk_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (st && !st->tcp_only) {
		st->tcp_only = 1;
		accel_count(ACCEL_CNT_CONN_TCP_ONLY, 1);
		/* A peer that is still about to be established must then stay
		 * off the fast path too (sockops.c checks membership). */
		if (!ACCEL_KEY_FROM_CTX(msg, &self, 0, bpf_get_netns_cookie(msg)))
			bpf_map_delete_elem(&accel_members, &self);
	}
	return accel_passed(msg->size);
}

/* For now: this message and the next go by TCP, which holds the writer back
 * until the peer reads. The socket's state is made here, at its first hold:
 * most sockets are never held, and an allocation per socket showed in
 * connrate's profile. Without it (allocation failed) a socket cannot be held
 * back safely: a message sent the TCP way unrecorded could be overtaken by
 * the next one. It is redirected, as before backpressure existed. */
static __always_inline int accel_hold(struct accel_sock_state *st, struct bpf_sock *sk, __u32 size)
{
	if (!st)
		st = bpf_sk_storage_get(&accel_sk_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return -1;
	if (!st->held) {
		st->held = 1;
		accel_count(ACCEL_CNT_BACKPRESSURE_ON, 1);
	}
	accel_count(ACCEL_CNT_BYTES_HELD, size);
	return accel_passed(size);
}

static __always_inline int accel_decide(struct sk_msg_md *msg, struct bpf_sock *sk, struct accel_sock_state *st)
{
	struct accel_config *cfg = accel_get_config();
	struct accel_peer_view peer_view;
	struct accel_member *member;
	struct accel_sock_key peer;
	__u32 size = msg->size;
	__u32 pad = 0;

	if (!cfg || !cfg->redirect_enabled)
		return accel_pass(msg, sk);
	if (st && st->tcp_only)
		return accel_passed(size);
	/* Its peer is accel proxy's: by a shortcut if it has one and may take
	 * it now, else (counted) on to the proxy as below. */
	if (st && (st->flags & ACCEL_ST_PROXY_FACING) && accel_shortcut_send(msg, sk, st, cfg))
		return ACCEL_REDIRECTED;

	if (ACCEL_KEY_FROM_CTX(msg, &peer, 1, bpf_get_netns_cookie(msg)))
		return accel_pass(msg, sk);
	member = bpf_map_lookup_elem(&accel_members, &peer);
	if (!member)
		return accel_pass(msg, sk);

	accel_peer_view(&peer_view, member->sk, member->cookie, cfg->queue_limit);
	if (st && st->held) {
		/* Back to the redirect only once the TCP path of this direction
		 * has drained, with half the peer's buffer free. */
		if (!peer_view.valid || peer_view.pressure || peer_view.rx_pending || !accel_tcp_tx_done(sk) ||
		    accel_dest_full(peer_view.queued, size, peer_view.limit / 2))
			return accel_hold(st, sk, size);
		st->held = 0;
		accel_count(ACCEL_CNT_BACKPRESSURE_OFF, 1);
	} else if (peer_view.valid &&
		   (peer_view.pressure || accel_dest_full(peer_view.queued, size, peer_view.limit))) {
		/* The hold starts at a multiple (accel_cut.h): until then the
		 * message, or its first pad bytes, is redirected below. */
		pad = accel_hold_pad(&peer_view);
		if (!pad && accel_hold(st, sk, size) >= 0)
			return ACCEL_TO_TCP;
	}

	if (bpf_msg_redirect_hash(msg, &accel_sock_hash, &peer, BPF_F_INGRESS) != SK_PASS)
		return accel_pass(msg, sk);
	/* The kernel runs this program again on what the redirect leaves. */
	size = accel_cut(msg, sk, st, pad);

	/* Into the proxy's socket: counted for a shortcut (accel_shortcut.h);
	 * what goes to it by TCP the kernel counts. */
	if (st && (st->flags & ACCEL_ST_PROXY_FACING))
		st->to_proxy += size;
	accel_count(ACCEL_CNT_MSG_REDIRECTED, 1);
	accel_count(ACCEL_CNT_BYTES_REDIRECTED, size);
	return ACCEL_REDIRECTED;
}

SEC("sk_msg")
int accel_skmsg(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	struct accel_sock_state *st;
	int rest_of_cut;

	accel_build_variant();
	if (!sk)
		return SK_PASS;
	/* No state yet: the socket was never held nor sent the TCP way, and
	 * its peer is not accel proxy's. */
	st = bpf_sk_storage_get(&accel_sk_state, sk, 0, 0);
	rest_of_cut = accel_cut_rest(msg, st);
	if (accel_decide(msg, sk, st) == ACCEL_TO_TCP && rest_of_cut)
		return accel_send_own(msg);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
