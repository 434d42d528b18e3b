/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The shortcut of accel proxy (skmsg.c): a socket whose connection the
 * proxy has let through to a local destination sends straight into that
 * destination's receive queue, as if the two were TCP peers on the fast
 * path; the proxy's sockets stay idle and carry only the close.
 *
 * Order. Before the shortcut (and whenever it is left) the socket's bytes
 * go to the proxy, which relays them into its own socket towards the
 * destination (`relay`). The proxy made `relay` send by TCP only
 * (tcp_only in its state, written before its first byte), so the kernel
 * counts what the proxy wrote into it (write_seq, from the snd_base
 * sockops.c recorded) and what the destination has read of it (its
 * copied_seq, in the same sequence space). A message may go by the
 * shortcut only when no earlier byte is still on the proxy's way:
 *  - the proxy has written into `relay` every byte the socket sent its way
 *    (relay's write_seq - snd_base equals what the socket redirected into
 *    the proxy's socket, to_proxy, plus what it queued to TCP, its own
 *    write_seq - snd_base; modulo 2^32: the two never differ by more than
 *    the bounded buffers between them);
 *  - the destination has read every one of them (copied_seq == write_seq),
 *    and its receive queue and psock backlog are empty: it reads its
 *    redirect queue first, so a shortcut byte must not pass a TCP one.
 *    copied_seq moves under the destination's socket lock (a read), or in
 *    its softirq under the lock's spinlock before a stream verdict queues
 *    the skb; the redirect takes that lock before it queues, so it comes
 *    after.
 * to_proxy is counted when the redirect is decided, before the kernel
 * delivers it (a concurrent send of the same socket, while the kernel has
 * dropped its lock to deliver, must see it): a redirect into the proxy's
 * socket that then fails, or is delivered in parts (the program runs again
 * on the rest), counts more than arrived, and that direction stays on the
 * proxy's way for the rest of the connection. Safe (no byte can pass
 * another), only slower; seen only under memory pressure.
 * Both counts are the kernel's, moved inside the proxy's write() and the
 * destination's read(): a request/response peer that answers a relayed
 * message has already made them agree, so the next message takes the
 * shortcut (a count the proxy wrote to the map after its write would often
 * come later than that next message, and keep it on the proxy's way). The
 * socket is the only writer of its to_proxy and runs this under its own
 * socket lock, so once the check holds no earlier byte can appear on the
 * proxy's way.
 *
 * Backpressure. Over queue_limit unread at the destination, or the host's
 * TCP memory under pressure, the message goes on to the proxy the fast
 * path's way (redirected into the proxy's socket, or by TCP once that one
 * holds queue_limit unread); the proxy relays it into `relay`, where TCP
 * (the destination's window, the relay's send buffer) holds the proxy
 * back, which stops reading, so the writer is held back too. It returns to the shortcut only under
 * the drain condition above, with half the limit free (a message larger
 * than that: an empty queue; accel_dest_full).
 *
 * Cost. Only a socket whose TCP peer is the proxy's (ACCEL_ST_PROXY_FACING,
 * set by sockops.c at establishment) counts its bytes and looks up a
 * shortcut; every other socket has no state until it is first held
 * (skmsg.c), and its messages pay nothing for this file. A message that
 * takes the shortcut adds its size to the entry's `sent`, already in hand
 * (accel proxy's idle timeout reads it: a local shortcut's bytes show on
 * none of the proxy's sockets).
 *
 * Close. A destination that got its end of stream (the proxy forwarded a
 * close, or died and the kernel closed its socket) gets no more bytes: they
 * go to the proxy's socket, which is closed and resets the writer.
 *
 * Egress (the proxy's upstream connects to another host; the shortcut's
 * dest is its relay, the proxy's upstream socket, which the proxy put in
 * accel_sock_hash). The message is redirected without BPF_F_INGRESS: the
 * kernel sends it on the upstream socket, in the sender's own context
 * (tcp_bpf_push), behind what the proxy wrote there. Order needs only the
 * first half of the drain condition: the proxy has written into the
 * upstream socket every byte the sender sent its way. That socket's
 * write_seq counts the shortcut's own bytes too, so the sender counts
 * those (to_relay) and the condition is written == sent + to_relay.
 * Backpressure is the upstream socket's send buffer, as for any sender:
 *  - a blocking sender (no O_NONBLOCK, no SO_SNDTIMEO) may always take it:
 *    with the buffer full it sleeps in the kernel until there is room, as
 *    it would on its own socket;
 *  - any other sender takes it only with room for the whole message: the
 *    kernel would send part, return the rest to the application, and leave
 *    it polling a socket of its own that is always writable. Without room
 *    the message goes to the proxy, whose relay waits as TCP does.
 * A message the kernel then sends only in part after all (a signal while
 * waiting, the host's TCP memory exhausted, the upstream reset) leaves
 * to_relay above what arrived: the direction stays on the proxy's way
 * after its next detour. Safe, only slower.
 */
#ifndef ACCEL_SHORTCUT_H
#define ACCEL_SHORTCUT_H

#include "accel_common.h"
#include "accel_maps.h"
#include "accel_backpressure.h"
#include "accel_cut.h"
#include "accel_key.h"

#define ACCEL_RCV_SHUTDOWN 1

/* Has the destination received its end of stream? Also 1 for a socket that
 * is gone (the cookie no longer matches). */
static __always_inline int accel_rcv_closed(__u64 addr, __u64 cookie)
{
	struct tcp_sock *tp = accel_live_tcp_sock(addr, cookie);

	if (!tp)
		return 1;
	return (tp->inet_conn.icsk_inet.sk.sk_shutdown & ACCEL_RCV_SHUTDOWN) != 0;
}

/* Has the proxy written into its relay socket every byte the sender sent
 * its way, and has the destination read them all? What the sender sent
 * the proxy: redirected into its socket (to_proxy, counted by skmsg.c as
 * each redirect is decided) and queued to TCP (the kernel's count, so a
 * message TCP took only in part, and the application sent again, counts
 * once). 0 for a relay or destination that is gone. */
static __always_inline int accel_relay_drained(struct bpf_sock *self, const struct accel_sock_state *st,
					       const struct accel_shortcut *sc, __u32 *sent_out)
{
	struct tcp_sock *me = bpf_rdonly_cast(self, bpf_core_type_id_kernel(struct tcp_sock));
	struct tcp_sock *relay = accel_live_tcp_sock(sc->relay_sock.sk, sc->relay_sock.cookie);
	struct tcp_sock *dest = accel_live_tcp_sock(sc->dest_sock.sk, sc->dest_sock.cookie);
	__u32 sent, written;

	if (!relay || !dest)
		return 0;
	sent = (__u32)st->to_proxy + (me->write_seq - st->snd_base);
	*sent_out = sent;
	written = relay->write_seq;
	return written - sc->relay_sock.snd_base == sent && dest->copied_seq == written;
}

/* The message went by the shortcut `sc`, counted in it (accel proxy's idle
 * timeout reads the count); `sent` is non-zero when it takes it again after
 * a detour. */
static __always_inline int accel_shortcut_taken(struct accel_sock_state *st, struct accel_shortcut *sc, __u32 size,
						__u32 sent)
{
	sc->sent += size;
	if (sent)
		accel_count(ACCEL_CNT_SHORTCUT_RESUMED, 1);
	if (!(st->flags & ACCEL_ST_SHORTCUT_SEEN))
		accel_count(ACCEL_CNT_SHORTCUT_DIRECTIONS, 1);
	st->flags |= ACCEL_ST_SHORTCUT_ON | ACCEL_ST_SHORTCUT_SEEN;
	accel_count(ACCEL_CNT_SHORTCUT_MSGS, 1);
	accel_count(ACCEL_CNT_SHORTCUT_BYTES, size);
	return 1;
}

/* The message goes on to the proxy (the caller sends it the fast path's
 * way); the next one checks the drain condition again. */
static __always_inline int accel_shortcut_detoured(struct accel_sock_state *st, __u32 size)
{
	accel_count(ACCEL_CNT_SHORTCUT_DETOURED, size);
	st->flags &= ~ACCEL_ST_SHORTCUT_ON;
	return 0;
}

#define ACCEL_TCP_ESTABLISHED 1
#define ACCEL_TCP_CLOSE_WAIT 8
#define ACCEL_SEND_SHUTDOWN 2
#define ACCEL_O_NONBLOCK 04000
#define ACCEL_MAX_SCHEDULE_TIMEOUT 0x7fffffffffffffffL

/* Does the sender wait in the kernel for room (a blocking socket without a
 * send timeout)? MSG_DONTWAIT on a single call is not seen: such a call
 * gets the part that fit, or EAGAIN, while its own socket stays writable
 * (io_uring sends so on a blocking socket, and after 128 immediate poll
 * retries sends from a worker that waits; docs/kernel-notes.md). */
static __always_inline int accel_sender_waits(struct bpf_sock *self)
{
	struct sock *sk = bpf_rdonly_cast(self, bpf_core_type_id_kernel(struct sock));
	struct socket *so = sk->sk_socket;

	if (!so || !so->file)
		return 0;
	return !(so->file->f_flags & ACCEL_O_NONBLOCK) && sk->sk_sndtimeo == ACCEL_MAX_SCHEDULE_TIMEOUT;
}

/* Will the upstream socket take all of `size` without waiting? Its send
 * buffer (what is queued, in truesize, plus the message and the overhead
 * of its skbs), and the not-yet-sent bytes under TCP_NOTSENT_LOWAT (the
 * socket's, or the namespace's sysctl; no bound by default), as
 * tcp_sendmsg_locked checks them before each new skb. */
static __always_inline int accel_upstream_room(struct tcp_sock *up, __u32 size)
{
	struct sock *sk = &up->inet_conn.icsk_inet.sk;
	__u32 lowat = up->notsent_lowat;

	if ((__s64)sk->sk_wmem_queued + size + size / 16 + 4096 > (__s64)sk->sk_sndbuf)
		return 0;
	if (!lowat)
		lowat = sk->__sk_common.skc_net.net->ipv4.sysctl_tcp_notsent_lowat;
	return (__u64)(up->write_seq - up->snd_nxt) + size < lowat;
}

/* An egress shortcut (dest is the proxy's upstream socket; see above): the
 * message is sent on the upstream socket (1), or goes on to the proxy (0). */
static __always_inline int accel_egress_send(struct sk_msg_md *msg, struct bpf_sock *self, struct accel_sock_state *st,
					     struct accel_shortcut *sc)
{
	struct tcp_sock *me = bpf_rdonly_cast(self, bpf_core_type_id_kernel(struct tcp_sock));
	struct tcp_sock *up = accel_live_tcp_sock(sc->relay_sock.sk, sc->relay_sock.cookie);
	struct accel_sock_key key;
	__u32 size = msg->size;
	__u32 sent = 0, state;
	struct sock *usk;

	if (!up)
		goto detour;
	usk = &up->inet_conn.icsk_inet.sk;
	if (accel_mem_pressure(usk))
		goto detour;
	state = usk->__sk_common.skc_state;
	if ((state != ACCEL_TCP_ESTABLISHED && state != ACCEL_TCP_CLOSE_WAIT) || usk->sk_err ||
	    (usk->sk_shutdown & ACCEL_SEND_SHUTDOWN))
		goto detour;
	if (!accel_sender_waits(self) && !accel_upstream_room(up, size))
		goto detour;
	if (!(st->flags & ACCEL_ST_SHORTCUT_ON)) {
		sent = (__u32)st->to_proxy + (me->write_seq - st->snd_base);
		if (up->write_seq - sc->relay_sock.snd_base != sent + st->to_relay)
			goto detour;
	}
	__builtin_memcpy(&key, &sc->dest, sizeof(key));
	if (bpf_msg_redirect_hash(msg, &accel_sock_hash, &key, 0) != SK_PASS)
		goto detour;
	st->to_relay += size;
	return accel_shortcut_taken(st, sc, size, sent);
detour:
	return accel_shortcut_detoured(st, size);
}

/* Send this message by the socket's shortcut (1, redirected), or not (0):
 * it has none, or may not take it now; the message then goes on to the
 * proxy by the fast path's usual way, counted. Only for a socket with
 * ACCEL_ST_PROXY_FACING: no other socket pays for this lookup. */
static __always_inline int accel_shortcut_send(struct sk_msg_md *msg, struct bpf_sock *self,
					       struct accel_sock_state *st, const struct accel_config *cfg)
{
	struct accel_peer_view dest;
	struct accel_shortcut *sc;
	struct accel_sock_key key;
	__u32 size = msg->size;
	/* Bytes this socket sent through the proxy, when it takes the shortcut
	 * (again) now. */
	__u32 sent = 0;
	/* What may go before the detour starts at a multiple (accel_cut.h). */
	__u32 pad = 0;

	if (ACCEL_KEY_FROM_CTX(msg, &key, 0, bpf_get_netns_cookie(msg)))
		goto detour;
	sc = bpf_map_lookup_elem(&accel_shortcuts, &key);
	if (!sc)
		return 0;
	if (sc->dest_sock.sk == sc->relay_sock.sk)
		return accel_egress_send(msg, self, st, sc);
	accel_peer_view(&dest, sc->dest_sock.sk, sc->dest_sock.cookie, cfg->queue_limit);
	if (!dest.valid || dest.pressure || accel_rcv_closed(sc->dest_sock.sk, sc->dest_sock.cookie))
		goto detour;
	if (st->flags & ACCEL_ST_SHORTCUT_ON) {
		/* The detour reaches the destination by TCP, behind what the
		 * shortcut queued: the split of a hold (accel_cut.h). */
		if (accel_dest_full(dest.queued, size, dest.limit)) {
			pad = accel_hold_pad(&dest);
			if (!pad)
				goto detour;
		}
	} else if (dest.rx_pending || accel_dest_full(dest.queued, size, dest.limit / 2) ||
		   !accel_relay_drained(self, st, sc, &sent)) {
		goto detour;
	}
	__builtin_memcpy(&key, &sc->dest, sizeof(key));
	if (bpf_msg_redirect_hash(msg, &accel_sock_hash, &key, BPF_F_INGRESS) != SK_PASS)
		goto detour;
	/* The first pad bytes only; the rest detours. */
	size = accel_cut(msg, self, st, pad);
	return accel_shortcut_taken(st, sc, size, sent);
detour:
	return accel_shortcut_detoured(st, size);
}

#endif /* ACCEL_SHORTCUT_H */
