/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Backpressure for the fast path's redirect (skmsg.c).
 *
 * bpf_tcp_ingress() charges redirected bytes to the peer's sk_rmem_alloc and
 * to the host's tcp_mem, but never compares them with the peer's sk_rcvbuf:
 * a writer whose peer does not read is never held back, until tcp_mem's hard
 * limit puts every TCP socket of the host under pressure and the writer gets
 * ENOMEM. So skmsg.c looks at the peer before each redirect. When the peer
 * holds queue_limit bytes unread (accel_config), or the host's TCP memory is
 * under pressure, the message goes the TCP way instead, and so do the connection's later messages (TCP then holds the
 * writer back with its window and the writer's send buffer, as for any TCP
 * socket). The connection returns to the redirect once no byte of that
 * direction is on the TCP path any more: everything the writer queued to
 * TCP is acknowledged (it reached the peer's receive queue), the peer's
 * receive queue and its psock's skb backlog are empty, and half the limit
 * is free. Only then can a redirected byte not overtake a TCP
 * one: the peer reads its redirect queue first.
 *
 * The peer's struct sock: SK_MSG programs may not release a socket, so a
 * SOCKHASH lookup is refused there. sockops.c stores each member socket's
 * address and cookie in accel_members instead, and this file reads the peer
 * through bpf_rdonly_cast (kernel 6.2+): every such read is a fault-tolerant
 * load, and the cookie check throws away an address whose socket was freed
 * and reused. Storing an address in a map needs CAP_PERFMON (root has it);
 * the maps are pinned in root's own directory.
 */
#ifndef ACCEL_BACKPRESSURE_H
#define ACCEL_BACKPRESSURE_H

#include "accel_common.h"

#define ACCEL_SOCK_RCVBUF_LOCK 2

/* What skmsg.c needs to know of the socket a message would be redirected
 * to; valid is 0 when the address no longer holds that socket. */
struct accel_peer_view {
	__u32 valid;
	__u32 queued;	  /* sk_rmem_alloc: bytes charged to its receive side */
	__u32 limit;	  /* what it may hold before the writer is held back */
	__u32 rx_pending; /* skbs in its receive queue or psock backlog */
	__u32 pressure;	  /* the host's TCP memory is under pressure */
};

static __always_inline struct tcp_sock *accel_tcp_sock(__u64 addr)
{
	return bpf_rdonly_cast((void *)addr, bpf_core_type_id_kernel(struct tcp_sock));
}

/* The TCP socket recorded at `addr` (accel_members), or NULL when there is
 * none or that memory no longer holds the socket with this cookie (it was
 * freed, and maybe reused). */
static __always_inline struct tcp_sock *accel_live_tcp_sock(__u64 addr, __u64 cookie)
{
	struct tcp_sock *tp;

	if (!addr)
		return NULL;
	tp = accel_tcp_sock(addr);
	if (tp->inet_conn.icsk_inet.sk.__sk_common.skc_cookie.counter != (__s64)cookie)
		return NULL;
	return tp;
}

/* Is the host's TCP memory under pressure (the protocol's flag, read
 * through this socket)? */
static __always_inline int accel_mem_pressure(struct sock *sk)
{
	unsigned long *pressure = sk->__sk_common.skc_prot->memory_pressure;
	unsigned long pv = 0;

	return pressure && !bpf_probe_read_kernel(&pv, sizeof(pv), pressure) && pv != 0;
}

/* The peer's receive buffer is no bound by itself: while redirected bytes
 * queue up, the kernel raises sk_rcvbuf to what is queued (up to
 * net.ipv4.tcp_rmem's max; seen on 6.18). So the bound is queue_limit from
 * the configuration, or the reader's own SO_RCVBUF if it set a smaller one.
 * Once redirected bytes fill the peer's buffer, its TCP window is closed as
 * well, and the TCP path adds only the writer's send buffer. */
static __always_inline void accel_peer_view(struct accel_peer_view *v, __u64 addr, __u64 cookie, __u32 queue_limit)
{
	struct tcp_sock *tp = accel_live_tcp_sock(addr, cookie);
	struct sk_psock *psock;
	struct sock *sk;
	int rcvbuf;

	__builtin_memset(v, 0, sizeof(*v));
	if (!tp)
		return;
	sk = &tp->inet_conn.icsk_inet.sk;
	v->valid = 1;
	v->queued = sk->sk_backlog.rmem_alloc.counter;
	v->limit = queue_limit;
	rcvbuf = sk->sk_rcvbuf;
	if ((sk->sk_userlocks & ACCEL_SOCK_RCVBUF_LOCK) && rcvbuf > 0 && (__u32)rcvbuf < v->limit)
		v->limit = rcvbuf;
	v->rx_pending = sk->sk_receive_queue.qlen;
	psock = accel_psock_of(sk);
	if (psock)
		v->rx_pending += psock->ingress_skb.qlen;
	v->pressure = accel_mem_pressure(sk);
}

/* Would `size` more bytes put the destination's queue over `limit`? A
 * message larger than the limit fits only an empty queue. The kernel hands
 * a large write to skmsg.c in messages of up to MAX_SKB_FRAGS page frags
 * (17 x 32 KiB, 544 KiB, seen on 6.18): under a --queue-limit (or a
 * reader's SO_RCVBUF) below that, such a message never fitted, and under
 * twice that never fitted half the limit, so a streaming writer went the
 * TCP way from its first message on (fast path), or once it had left a
 * shortcut never came back (0 returns in 8 drains at 256 KiB). So the
 * queue holds at most the limit (and under 256 KiB more: accel_cut.h), or
 * one message. Order does not depend on it: that is each path's drain
 * condition's. */
static __always_inline int accel_dest_full(__u32 queued, __u32 size, __u32 limit)
{
	if (size > limit)
		return queued != 0;
	return queued + size > limit;
}

/* Has everything the writer queued to TCP been acknowledged? */
static __always_inline int accel_tcp_tx_done(struct bpf_sock *self)
{
	struct tcp_sock *tp = bpf_rdonly_cast(self, bpf_core_type_id_kernel(struct tcp_sock));

	return tp->snd_una == tp->write_seq;
}

#endif /* ACCEL_BACKPRESSURE_H */
