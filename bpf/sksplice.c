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
#include "accel_repeat.h"

/* skbs waiting in a destination's psock that count as congestion by
 * themselves (one holds up to 64 KB, or a few hundred KB coalesced). */
#define ACCEL_SPLICE_BACKLOG_MAX 16

/* Is the destination of this socket's data congested: its send buffer full
 * (its peer does not read, or reads slowly) with bytes already waiting
 * behind it in its psock? Then its owner must hold this socket back. */
static __always_inline int accel_dest_congested(__u64 cookie)
{
	struct bpf_sock *dest = bpf_map_lookup_elem(&accel_splice_hash, &cookie);
	struct tcp_sock *tp;
	struct sk_psock *psock;
	struct sock *sk;
	int congested = 0;
	__u32 qlen;

	if (!dest)
		return 0;
	tp = bpf_rdonly_cast(dest, bpf_core_type_id_kernel(struct tcp_sock));
	sk = &tp->inet_conn.icsk_inet.sk;
	psock = accel_psock_of(sk);
	if (psock) {
		qlen = psock->ingress_skb.qlen;
		/* skbs pile up there only once the send buffer is full (or TCP
		 * memory is under pressure): a few are a busy destination, more
		 * are one that does not keep up. */
		congested = qlen >= ACCEL_SPLICE_BACKLOG_MAX ||
			    (qlen >= ACCEL_SPLICE_BACKLOG_MAX / 4 && sk->sk_wmem_queued >= sk->sk_sndbuf);
	}
	bpf_sk_release(dest);
	return congested;
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
		/* A retransmission's head repeats bytes already taken. */
		__u32 kept, repeated = accel_cut_repeated(skb, &st->next_seq, &st->seq_known, &kept);

		if (repeated) {
			accel_splice_count(ACCEL_SPLICE_BYTES_REPEATED, repeated);
			if (kept)
				accel_splice_count(ACCEL_SPLICE_BYTES_REPEAT_SENT, kept);
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
	if (accel_dest_congested(cookie)) {
		__u32 one = 1;

		if (!bpf_map_update_elem(&accel_splice_held, &cookie, &one, BPF_NOEXIST))
			accel_splice_count(ACCEL_SPLICE_HOLDS, 1);
	}
	accel_splice_count(ACCEL_SPLICE_BYTES_REDIRECTED, len);
	accel_splice_count(ACCEL_SPLICE_SKBS_REDIRECTED, 1);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
