// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * SK_SKB stream verdict attached to accel_splice_active: every chunk of data
 * that arrives on a spliced socket is sent out of its peer socket, found in
 * accel_splice_hash (bpf_sk_redirect_hash without BPF_F_INGRESS), so the
 * owning process never reads or writes it. A socket whose peer is not in the
 * map keeps its data (SK_PASS): user space reads it like any other.
 */
#include "accel_common.h"
#include "accel_splice_maps.h"

/* Kernel 6.3+: the kernel's sk_buff behind the context, for the TCP
 * sequence number in its control block. */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* bpf_skb_adjust_room() cuts at most this much off an sk_skb's head per
 * call; ACCEL_SPLICE_CUT_STEPS calls cut up to 255 KB, more than a TCP
 * retransmission repeats. */
#define ACCEL_SPLICE_CUT_STEP 4095
#define ACCEL_SPLICE_CUT_STEPS 64

/* Cut `bytes` off the head of skb; returns how many were cut. */
static __always_inline __u32 accel_splice_cut_head(struct __sk_buff *skb, __u32 bytes)
{
	__u32 cut = 0;

	for (int i = 0; i < ACCEL_SPLICE_CUT_STEPS && cut < bytes; i++) {
		__u32 n = bytes - cut < ACCEL_SPLICE_CUT_STEP ? bytes - cut : ACCEL_SPLICE_CUT_STEP;

		if (bpf_skb_adjust_room(skb, -(__s32)n, 0, 0))
			break;
		cut += n;
	}
	return cut;
}

/*
 * How many bytes at the head of skb this socket has handed over before.
 *
 * TCP queues a segment that overlaps what it has received already whole,
 * its old head included (tcp_data_queue: "partial packet"), and later
 * segments coalesce behind it; a retransmission that re-covers data whose
 * ACK got lost does that. Readers skip the old head by the sequence number
 * (tcp_recvmsg, tcp_read_sock), but the read_skb path that feeds this
 * program hands over the skb whole and advances copied_seq by its length
 * (6.18: tcp_read_skb, tcp_eat_skb). So the program keeps the sequence
 * number just past what it took and cuts what lies before it; the kernel
 * then advances copied_seq by what is left.
 */
static __always_inline __u32 accel_splice_repeated(struct __sk_buff *skb, struct accel_splice_sock *st)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
	__u32 seq = ((struct tcp_skb_cb *)&kskb->cb[0])->seq;
	__u32 len = skb->len;
	__s32 repeated;

	if (!st->seq_known) {
		/* The first skb after the hand-off: user space read up to
		 * copied_seq (with a reader that skips old heads). */
		struct bpf_sock *sk = skb->sk;
		struct tcp_sock *tp = sk ? bpf_skc_to_tcp_sock(sk) : NULL;

		if (!tp)
			return 0;
		st->next_seq = tp->copied_seq;
		st->seq_known = 1;
	}
	repeated = (__s32)(st->next_seq - seq);
	if ((__s32)(seq + len - st->next_seq) > 0)
		st->next_seq = seq + len;
	if (repeated <= 0)
		return 0;
	return (__u32)repeated < len ? (__u32)repeated : len;
}

SEC("sk_skb/stream_verdict")
int accel_splice_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct accel_splice_sock *st;
	__u32 len = skb->len;

	/* A FIN arrives as an empty skb, and neither way of keeping it works.
	 * Redirected, the peer's send path takes its zero length for a broken
	 * pipe. Passed, it is queued on this socket's own psock behind the
	 * bytes its peer redirected here, whenever some still wait to be sent,
	 * and the psock's worker takes the zero length for a broken pipe too:
	 * it stops transmitting for good and the bytes queued behind it are
	 * freed at close. TCP has recorded the end of stream already (readers
	 * see it without the skb), so it is dropped; user space forwards the
	 * half-close once the bytes before it are through. */
	if (!len) {
		accel_splice_count(ACCEL_SPLICE_FINS_DROPPED, 1);
		return SK_DROP;
	}
	st = bpf_map_lookup_elem(&accel_splice_socks, &cookie);
	if (st) {
		__u32 repeated = accel_splice_repeated(skb, st);

		if (repeated) {
			__u32 cut = accel_splice_cut_head(skb, repeated);

			accel_splice_count(ACCEL_SPLICE_BYTES_REPEATED, repeated);
			if (cut < repeated)
				accel_splice_count(ACCEL_SPLICE_BYTES_REPEAT_SENT, repeated - cut);
			len = skb->len;
			/* All of it was old: dropped empty, it moves nothing. */
			if (!len)
				return SK_DROP;
		}
	}
	if (bpf_sk_redirect_hash(skb, &accel_splice_hash, &cookie, 0) != SK_PASS) {
		accel_splice_count(ACCEL_SPLICE_SKBS_PASSED, 1);
		return SK_PASS;
	}
	if (st)
		__sync_fetch_and_add(&st->bytes_redirected, len);
	accel_splice_count(ACCEL_SPLICE_BYTES_REDIRECTED, len);
	accel_splice_count(ACCEL_SPLICE_SKBS_REDIRECTED, 1);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
