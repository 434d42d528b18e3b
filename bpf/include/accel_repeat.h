/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Cutting the head a TCP retransmission repeats, for stream verdicts
 * (sksplice.c, stream_verdict.c).
 *
 * TCP queues a segment that overlaps what it has received already whole,
 * its old head included (tcp_data_queue: "partial packet"), and later
 * segments coalesce behind it; a retransmission that re-covers data whose
 * ACK got lost does that. Readers skip the old head by the sequence number
 * (tcp_recvmsg, tcp_read_sock), but the read_skb path that feeds a stream
 * verdict without a parser hands over the skb whole and advances copied_seq
 * by its length (6.18: tcp_read_skb, tcp_eat_skb). So a verdict keeps, per
 * socket, the sequence number just past what it took and cuts what lies
 * before it; the kernel then advances copied_seq by what is left.
 */
#ifndef ACCEL_REPEAT_H
#define ACCEL_REPEAT_H

#include "accel_common.h"

/* Kernel 6.2+: the kernel's sk_buff behind the context, for the TCP
 * sequence number in its control block. */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* bpf_skb_adjust_room() cuts at most this much off an sk_skb's head per
 * call; ACCEL_CUT_STEPS calls (bpf_loop) cut up to 16 MB: more than a
 * retransmission repeats, and more than one receive-queue skb holds, so
 * also the part of one that a reader took before the hand-off. */
#define ACCEL_CUT_STEP 4095
#define ACCEL_CUT_STEPS 4097

struct accel_cut {
	struct __sk_buff *skb;
	__u32 left;
	__u32 cut;
};

static long accel_cut_step(__u64 index, void *data)
{
	struct accel_cut *c = data;
	__u32 n = c->left < ACCEL_CUT_STEP ? c->left : ACCEL_CUT_STEP;

	if (!n || bpf_skb_adjust_room(c->skb, -(__s32)n, 0, 0))
		return 1;
	c->left -= n;
	c->cut += n;
	return 0;
}

/* Cut `bytes` (at most skb->len) off the head of skb; returns how many
 * were cut. */
static __always_inline __u32 accel_cut_head(struct __sk_buff *skb, __u32 bytes)
{
	struct accel_cut c = { .skb = skb, .left = bytes };

	/* Each step needs its bytes in the linear part: one pull of them all
	 * costs one copy, where a pull per step would grow the head anew each
	 * time. A failed pull leaves the steps to pull their own. */
	if (bytes > ACCEL_CUT_STEP)
		bpf_skb_pull_data(skb, bytes);
	bpf_loop(ACCEL_CUT_STEPS, accel_cut_step, &c, 0);
	return c.cut;
}

/*
 * How many bytes at the head of a non-empty skb this socket has handed
 * over before. *next_seq is the sequence number just past what the verdict
 * took, valid once *known is set; at the first skb it is the socket's
 * copied_seq (whoever read before read with a reader that skips old heads).
 */
static __always_inline __u32 accel_repeated_head(struct __sk_buff *skb, __u32 *next_seq, __u32 *known)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	__u32 seq = ((struct tcp_skb_cb *)&kskb->cb[0])->seq;
	__u32 len = skb->len;
	__s32 repeated;

	if (!*known) {
		struct bpf_sock *sk = skb->sk;
		struct tcp_sock *tp = sk ? bpf_skc_to_tcp_sock(sk) : NULL;

		if (!tp)
			return 0;
		*next_seq = tp->copied_seq;
		*known = 1;
	}
	repeated = (__s32)(*next_seq - seq);
	if ((__s32)(seq + len - *next_seq) > 0)
		*next_seq = seq + len;
	if (repeated <= 0)
		return 0;
	return (__u32)repeated < len ? (__u32)repeated : len;
}

/* Find and cut the repeated head of a non-empty skb. Returns the bytes
 * found; *kept gets those that could not be cut (they go out twice). An skb
 * that was all old is empty afterwards: the caller drops it. */
static __always_inline __u32 accel_cut_repeated(struct __sk_buff *skb, __u32 *next_seq, __u32 *known, __u32 *kept)
{
	__u32 repeated = accel_repeated_head(skb, next_seq, known);

	*kept = repeated ? repeated - accel_cut_head(skb, repeated) : 0;
	return repeated;
}

#endif /* ACCEL_REPEAT_H */
