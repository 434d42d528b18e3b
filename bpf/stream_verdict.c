// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The fast path's stream verdict: it passes every skb on to its socket,
 * after cutting off bytes a TCP retransmission repeats (accel_repeat.h).
 *
 * Why it exists: on kernels carrying commit 929e30f93125 (stable 6.6.128+,
 * 6.12.75+, 6.18.14+) without its fix 04af4efde58a, a socket that sits in a
 * SOCKHASH with only an SK_MSG program reports FIONREAD == 0 and misses
 * epoll wake-ups, so epoll-based readers stall. With a stream verdict on
 * the same map the kernel takes the receive path that signals readiness.
 * accel attaches it only when its self-test shows the plain setup stalls.
 * That path hands the verdict whole skbs, so bytes that reach a fast-path
 * socket through TCP (before both ends were in the map, or from a peer that
 * left it) would repeat a retransmission's old head without the cut.
 */
#include "accel_common.h"
#include "accel_maps.h"
#include "accel_repeat.h"

SEC("sk_skb/stream_verdict")
int accel_stream_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct accel_rx_seq *st, fresh = {};
	__u32 repeated, kept;

	/* An empty skb (a FIN) repeats nothing. */
	if (!skb->len)
		return SK_PASS;
	st = bpf_map_lookup_elem(&accel_rx_seqs, &cookie);
	if (!st) {
		bpf_map_update_elem(&accel_rx_seqs, &cookie, &fresh, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&accel_rx_seqs, &cookie);
		if (!st)
			return SK_PASS;
	}
	repeated = accel_cut_repeated(skb, &st->next_seq, &st->known, &kept);
	if (!repeated)
		return SK_PASS;
	accel_count(ACCEL_CNT_BYTES_REPEATED, repeated);
	if (kept)
		accel_count(ACCEL_CNT_BYTES_REPEAT_SENT, kept);
	/* All of it was old: dropped empty, it moves nothing. */
	return skb->len ? SK_PASS : SK_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
