/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The shortcut of accel proxy (skmsg.c): a socket whose connection the
 * proxy has let through to a local destination sends straight into that
 * destination's receive queue, as if the two were TCP peers on the fast
 * path; the proxy's sockets stay idle and carry only the close.
 *
 * Order. Before the shortcut (and whenever it is left) the socket's bytes
 * go to the proxy, which relays them into its own socket towards the
 * destination (`relay`). A message may go by the shortcut only when no
 * earlier byte is still on that way:
 *  - every byte the socket sent the proxy's way has been written by the
 *    proxy into `relay` (to_proxy == relayed; the proxy updates relayed
 *    once its write returned, and then the relay's sk_msg program has
 *    either redirected them into the destination's receive queue, where
 *    the shortcut's bytes queue up behind them, or sent them the TCP way);
 *  - nothing of `relay` is still on the TCP path: all it queued to TCP is
 *    acknowledged (in the destination's receive queue), and the
 *    destination's receive queue and psock backlog are empty (it reads
 *    its redirect queue first, so a shortcut byte would overtake them).
 * The socket is the only writer of its to_proxy and runs this under its
 * own socket lock, so once the check holds no earlier byte can appear on
 * the proxy's way.
 *
 * Backpressure. Over queue_limit unread at the destination, or the host's
 * TCP memory under pressure, the message goes on to the proxy the fast
 * path's way (redirected into the proxy's socket, or by TCP once that one
 * holds queue_limit unread); the proxy relays it into `relay`, whose own
 * fast-path backpressure then holds the proxy back, which stops reading,
 * so the writer is held back too. It returns to the shortcut only under
 * the drain condition above, with half the limit free.
 *
 * Cost. Only a socket whose TCP peer is the proxy's (ACCEL_ST_PROXY_FACING,
 * set by sockops.c at establishment) counts its bytes and looks up a
 * shortcut; every other socket has no state until it is first held
 * (skmsg.c), and its messages pay nothing for this file.
 *
 * Close. A destination that got its end of stream (the proxy forwarded a
 * close, or died and the kernel closed its socket) gets no more bytes: they
 * go to the proxy's socket, which is closed and resets the writer.
 */
#ifndef ACCEL_SHORTCUT_H
#define ACCEL_SHORTCUT_H

#include "accel_common.h"
#include "accel_maps.h"
#include "accel_backpressure.h"
#include "accel_key.h"

#define ACCEL_RCV_SHUTDOWN 1

/* Has the destination received its end of stream? Also 1 for a socket that
 * is gone (the cookie no longer matches). */
static __always_inline int accel_rcv_closed(__u64 addr, __u64 cookie)
{
	struct tcp_sock *tp = accel_tcp_sock(addr);
	struct sock *sk = &tp->inet_conn.icsk_inet.sk;

	if (!addr || sk->__sk_common.skc_cookie.counter != (__s64)cookie)
		return 1;
	return (sk->sk_shutdown & ACCEL_RCV_SHUTDOWN) != 0;
}

/* Has everything the socket at addr queued to TCP been acknowledged? 0 for
 * a socket that is gone. */
static __always_inline int accel_member_tx_done(__u64 addr, __u64 cookie)
{
	struct tcp_sock *tp = accel_tcp_sock(addr);

	if (!addr || tp->inet_conn.icsk_inet.sk.__sk_common.skc_cookie.counter != (__s64)cookie)
		return 0;
	return tp->snd_una == tp->write_seq;
}

/* Send this message by the socket's shortcut (1, redirected), or not (0):
 * it has none, or may not take it now; the message then goes on to the
 * proxy by the fast path's usual way, counted. Only for a socket with
 * ACCEL_ST_PROXY_FACING: no other socket pays for this lookup. */
static __always_inline int accel_shortcut_send(struct sk_msg_md *msg, struct accel_sock_state *st,
					       const struct accel_config *cfg)
{
	struct accel_peer_view dest;
	struct accel_shortcut *sc;
	struct accel_sock_key key;
	__u32 size = msg->size;

	if (ACCEL_KEY_FROM_CTX(msg, &key, 0, bpf_get_netns_cookie(msg)))
		goto detour;
	sc = bpf_map_lookup_elem(&accel_shortcuts, &key);
	if (!sc) {
		st->to_proxy += size;
		return 0;
	}
	accel_peer_view(&dest, sc->dest_sock.sk, sc->dest_sock.cookie, cfg->queue_limit);
	if (!dest.valid || dest.pressure || accel_rcv_closed(sc->dest_sock.sk, sc->dest_sock.cookie))
		goto detour;
	if (st->flags & ACCEL_ST_SHORTCUT_ON) {
		if (dest.queued + size > dest.limit)
			goto detour;
	} else if (st->to_proxy != sc->relayed || dest.rx_pending ||
		   !accel_member_tx_done(sc->relay_sock.sk, sc->relay_sock.cookie) ||
		   dest.queued + size > dest.limit / 2) {
		goto detour;
	}
	__builtin_memcpy(&key, &sc->dest, sizeof(key));
	if (bpf_msg_redirect_hash(msg, &accel_sock_hash, &key, BPF_F_INGRESS) != SK_PASS)
		goto detour;
	if (!(st->flags & ACCEL_ST_SHORTCUT_SEEN))
		accel_count(ACCEL_CNT_SHORTCUT_DIRECTIONS, 1);
	st->flags |= ACCEL_ST_SHORTCUT_ON | ACCEL_ST_SHORTCUT_SEEN;
	accel_count(ACCEL_CNT_SHORTCUT_MSGS, 1);
	accel_count(ACCEL_CNT_SHORTCUT_BYTES, size);
	return 1;
detour:
	st->to_proxy += size;
	accel_count(ACCEL_CNT_SHORTCUT_DETOURED, size);
	st->flags &= ~ACCEL_ST_SHORTCUT_ON;
	return 0;
}

#endif /* ACCEL_SHORTCUT_H */
