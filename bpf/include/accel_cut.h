/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * A hold starts at a multiple (skmsg.c, accel_shortcut.h).
 *
 * A hold splits the reader's stream in two queues: the redirected bytes
 * (read first) and the held ones behind them in its TCP receive queue. A
 * read that reaches the end of the first queue stops there, short of its
 * buffer, with bytes still to read. libuv (Node.js) takes a short read for
 * "nothing more" and, when the same poll reports a hang-up (the socket is
 * shut both ways: the reader half-closed, and the writer's FIN arrived
 * behind the held bytes), ends the stream there: the held bytes are lost
 * to it. So a hold starts only once the unread redirected bytes are a
 * multiple of ACCEL_HOLD_ALIGN, which libuv's read size (64 KiB) and accel
 * proxy's (256 KiB) divide: each read of them is then full, down to the
 * last, and the next read goes on to the TCP queue.
 *
 * The message that would start the hold is cut (accel_cut): its first pad
 * bytes are redirected (bpf_msg_apply_bytes), and the kernel runs the
 * program again on the rest within the same sendmsg. That run starts from
 * the message as the first left it: its redirect target and byte count
 * are still set, and the kernel turns an SK_PASS into a redirect whenever
 * a target is set (sk_psock_msg_verdict), so a plain SK_PASS would send the
 * rest to the first part's target as well, a socket whose reference the
 * kernel has dropped since, and the byte count would cut it again. So the
 * rest resets the count (accel_cut_rest) and, when it goes the TCP way, is
 * redirected into the socket's own send path (accel_send_own), which is
 * what SK_PASS does for a message nothing redirected. The rest is known by
 * its size: smaller than the cut message (cut_size), which it is also when
 * the kernel delivered only part of the first bytes (under memory
 * pressure). A later message taken for a rest by mistake (the first part's
 * delivery failed, so no rest came) is sent as it would have been. Left
 * open: a second thread sending on the same socket while the kernel has
 * dropped the socket's lock to deliver the first part can take the mark
 * first; the rest then goes by a plain SK_PASS to the first part's target,
 * still in order.
 */
#ifndef ACCEL_CUT_H
#define ACCEL_CUT_H

#include "accel_common.h"
#include "accel_maps.h"
#include "accel_key.h"
#include "accel_backpressure.h"

#define ACCEL_HOLD_ALIGN 262144

/* How many bytes of the message still go the redirect way before the hold
 * (0: hold now). Not when the TCP queue already holds bytes (the split
 * exists), and not once the queue is a whole unit past the limit: the
 * reader's reads while it is topped up move the count off the multiple
 * again (by their size, so it stays a multiple of that), and the queue must
 * stay bounded. Nor under the host's TCP memory pressure. A reader whose
 * read size does not divide the unit is not protected
 * (docs/kernel-notes.md). */
static __always_inline __u32 accel_hold_pad(const struct accel_peer_view *v)
{
	if (v->pressure || v->rx_pending || v->queued >= v->limit + ACCEL_HOLD_ALIGN)
		return 0;
	return (ACCEL_HOLD_ALIGN - (v->queued & (ACCEL_HOLD_ALIGN - 1))) & (ACCEL_HOLD_ALIGN - 1);
}

/* After a redirect of the whole message succeeded: cut it after its first
 * pad bytes when pad is smaller than the message, so that the redirect
 * covers them only. Returns what the redirect covers: pad, or the whole
 * message (no pad, or no socket state to mark the cut in). */
static __always_inline __u32 accel_cut(struct sk_msg_md *msg, struct bpf_sock *sk, struct accel_sock_state *st,
				       __u32 pad)
{
	__u32 size = msg->size;

	if (!pad || pad >= size)
		return size;
	if (!st)
		st = bpf_sk_storage_get(&accel_sk_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return size;
	bpf_msg_apply_bytes(msg, pad);
	st->cut_size = size;
	return pad;
}

/* Is this run the rest of a cut message? Then its byte count is reset, and
 * the caller redirects it, into its peer or accel_send_own. */
static __always_inline int accel_cut_rest(struct sk_msg_md *msg, struct accel_sock_state *st)
{
	if (!st || !st->cut_size || msg->size >= st->cut_size)
		return 0;
	st->cut_size = 0;
	bpf_msg_apply_bytes(msg, 0);
	return 1;
}

/* The TCP way for the rest of a cut message: into the socket's own send
 * path (egress, flags 0). Its lookup fails only for a socket leaving the
 * map (detach): then into its peer's receive queue, in order though not
 * held, if the peer is still in the map; failing both, SK_PASS is all
 * there is. */
static __always_inline int accel_send_own(struct sk_msg_md *msg)
{
	__u64 netns = bpf_get_netns_cookie(msg);
	struct accel_sock_key self, peer;
	/* Both read before either is used: the verifier refuses the context
	 * reads the compiler shares between two branches. */
	int no_self = ACCEL_KEY_FROM_CTX(msg, &self, 0, netns);
	int no_peer = ACCEL_KEY_FROM_CTX(msg, &peer, 1, netns);

	if (!no_self && bpf_msg_redirect_hash(msg, &accel_sock_hash, &self, 0) == SK_PASS)
		return SK_PASS;
	if (!no_peer)
		bpf_msg_redirect_hash(msg, &accel_sock_hash, &peer, BPF_F_INGRESS);
	return SK_PASS;
}

#endif /* ACCEL_CUT_H */
