// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * SK_MSG program attached to accel_sock_hash: a sendmsg on a socket of the
 * map lands straight in the receive queue of its peer socket when the peer
 * is in the map too. Anything else (no peer, redirect switched off) goes the
 * normal TCP way: SK_PASS, never SK_DROP.
 */
#include "accel_common.h"
#include "accel_maps.h"
#include "accel_key.h"

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
	accel_count(ACCEL_CNT_MSG_PASSED, 1);
	accel_count(ACCEL_CNT_BYTES_PASSED, msg->size);
	return SK_PASS;
}

SEC("sk_msg")
int accel_skmsg(struct sk_msg_md *msg)
{
	struct accel_config *cfg = accel_get_config();
	struct bpf_sock *sk = msg->sk;
	struct accel_sock_state *st;
	struct accel_sock_key peer;
	__u32 size = msg->size;

	if (!sk)
		return SK_PASS;
	if (!cfg || !cfg->redirect_enabled)
		return accel_pass(msg, sk);

	st = bpf_sk_storage_get(&accel_sk_state, sk, 0, 0);
	if (st && st->tcp_only) {
		accel_count(ACCEL_CNT_MSG_PASSED, 1);
		accel_count(ACCEL_CNT_BYTES_PASSED, size);
		return SK_PASS;
	}

	if (ACCEL_KEY_FROM_CTX(msg, &peer, 1, bpf_get_netns_cookie(msg)))
		return accel_pass(msg, sk);

	if (bpf_msg_redirect_hash(msg, &accel_sock_hash, &peer, BPF_F_INGRESS) != SK_PASS)
		return accel_pass(msg, sk);

	accel_count(ACCEL_CNT_MSG_REDIRECTED, 1);
	accel_count(ACCEL_CNT_BYTES_REDIRECTED, size);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
