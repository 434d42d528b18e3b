/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Cutting the head a TCP retransmission repeats, for stream verdicts
 * (sksplice.c, skskb_pass.c).
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

/* Kernel 6.3+: the kernel's sk_buff behind the context, for the TCP
 * sequence number in its control block. */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* bpf_skb_adjust_room() cuts at most this much off an sk_skb's head per
 * call; ACCEL_CUT_STEPS calls cut up to 255 KB, more than a TCP
 * retransmission repeats. */
#define ACCEL_CUT_STEP 4095
#define ACCEL_CUT_STEPS 64

/* Cut `bytes` off the head of skb; returns how many were cut. */
static __always_inline __u32 accel_cut_head(struct __sk_buff *skb, __u32 bytes)
{
	__u32 cut = 0;

	for (int i = 0; i < ACCEL_CUT_STEPS && cut < bytes; i++) {
		__u32 n = bytes - cut < ACCEL_CUT_STEP ? bytes - cut : ACCEL_CUT_STEP;

		if (bpf_skb_adjust_room(skb, -(__s32)n, 0, 0))
			break;
		cut += n;
	}
	return cut;
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

#endif /* ACCEL_REPEAT_H */
