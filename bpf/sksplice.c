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
	/* Under bulk data both ways, 6.18 now and then hands the verdict an skb
	 * whose first bytes it has handed over before (seen: 65,483 bytes, one
	 * loopback segment, at the head of a coalesced skb that runs further),
	 * and they go out twice. Nothing here can cut them off (sk_skb can
	 * only trim 4 KB), so they are counted: the bytes of an skb before the
	 * end of the last one taken, read from the TCP sequence numbers. */
	st = bpf_map_lookup_elem(&accel_splice_socks, &cookie);
	if (st) {
		struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);
		__u32 seq = ((struct tcp_skb_cb *)&kskb->cb[0])->seq;
		__s32 repeated = st->seq_known ? (__s32)(st->next_seq - seq) : 0;

		if (repeated > 0)
			accel_splice_count(ACCEL_SPLICE_BYTES_REPEATED, (__u32)repeated < len ? (__u32)repeated : len);
		if (!st->seq_known || (__s32)(seq + len - st->next_seq) > 0)
			st->next_seq = seq + len;
		st->seq_known = 1;
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
