// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Taking spliced sockets out of the verdict's map (accel_splice_active) with
 * each socket locked, for the owner's hold (src/splice/holds.ts).
 *
 * A socket that leaves the map has its psock's program cleared at once
 * (sk_psock_stop_verdict). A verdict run already under way on another CPU
 * (tcp_read_skb's loop over the receive queue) then finds no program for
 * the skbs it takes next and drops them, although TCP acknowledged them:
 * the bytes are lost and the connection stalls waiting for them. Raising
 * SO_RCVLOWAT first makes such a run rarer, not impossible (it still runs
 * when the receive buffer is nearly full, and one may be under way).
 *
 * The TCP iterator runs its program with the socket locked (lock_sock since
 * 6.4, lock_sock_fast from 5.15): taking the lock waits for a verdict run
 * under way in the receive path (softirq, under the socket's spinlock, or
 * its owner's), and segments that arrive meanwhile wait in the socket's
 * backlog, processed at release_sock, when the verdict is gone. So a socket
 * taken out here leaves between two verdict runs, never in the middle of
 * one; what arrives afterwards stays in its receive queue.
 *
 * User space puts the cookies to take out in accel_splice_unplug, reads the
 * iterator once, and then asks the map which sockets left it.
 */
#include "accel_common.h"
#include "accel_splice_maps.h"

/* Cookies to take out in one run, filled by user space: not pinned, it goes
 * with the object. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ACCEL_SOCKHASH_MAX);
	__type(key, __u64);
	__type(value, __u32);
} accel_splice_unplug SEC(".maps");

SEC("iter/tcp")
int accel_iter_splice_hold(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_sock *tp;
	__u64 cookie;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	cookie = bpf_get_socket_cookie(tp);
	/* The same socket may be shown twice (a read that overflowed its
	 * buffer starts again from it): deleting twice is harmless. */
	if (bpf_map_lookup_elem(&accel_splice_unplug, &cookie))
		bpf_map_delete_elem(&accel_splice_active, &cookie);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
