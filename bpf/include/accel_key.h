/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The one place that turns a socket context into a struct accel_sock_key.
 *
 * struct bpf_sock_ops and struct sk_msg_md expose the same field names, so
 * one macro serves both. Their quirks, handled here once:
 *  - local_port is in host byte order;
 *  - remote_port is a 32-bit field whose value is the network-order port
 *    in the upper half on little-endian machines: bpf_ntohl() yields the
 *    port in host order;
 *  - an AF_INET6 socket talking to ::ffff:a.b.c.d is folded into AF_INET.
 */
#ifndef ACCEL_KEY_H
#define ACCEL_KEY_H

#include "accel.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

static __always_inline void accel_ip4_to_mapped(__u32 *dst, __u32 ip4)
{
	dst[0] = 0;
	dst[1] = 0;
	dst[2] = bpf_htonl(0x0000ffff);
	dst[3] = ip4;
}

static __always_inline int accel_ip6_is_mapped(const __u32 *ip6)
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0x0000ffff);
}

/*
 * Fill *key from ctx. With reversed set, the key is the one the peer socket
 * of the same connection was stored under (local and remote swapped).
 * Returns 0, or -1 for a family the fast path does not handle.
 */
#define ACCEL_KEY_FROM_CTX(ctx, key, reversed, cookie)                                \
	({                                                                            \
		int __ret = 0;                                                        \
		__u32 __lip[4], __rip[4];                                             \
		__u32 __family = (ctx)->family;                                       \
		__u32 __lport = (ctx)->local_port;                                    \
		__u32 __rport = bpf_ntohl((ctx)->remote_port);                        \
		if (__family == AF_INET) {                                            \
			accel_ip4_to_mapped(__lip, (ctx)->local_ip4);                 \
			accel_ip4_to_mapped(__rip, (ctx)->remote_ip4);                \
		} else if (__family == AF_INET6) {                                    \
			__lip[0] = (ctx)->local_ip6[0];                               \
			__lip[1] = (ctx)->local_ip6[1];                               \
			__lip[2] = (ctx)->local_ip6[2];                               \
			__lip[3] = (ctx)->local_ip6[3];                               \
			__rip[0] = (ctx)->remote_ip6[0];                              \
			__rip[1] = (ctx)->remote_ip6[1];                              \
			__rip[2] = (ctx)->remote_ip6[2];                              \
			__rip[3] = (ctx)->remote_ip6[3];                              \
			if (accel_ip6_is_mapped(__lip) && accel_ip6_is_mapped(__rip)) \
				__family = AF_INET;                                   \
		} else {                                                              \
			__ret = -1;                                                   \
		}                                                                     \
		if (!__ret) {                                                         \
			__builtin_memset((key), 0, sizeof(*(key)));                   \
			(key)->netns = (cookie);                                      \
			(key)->family = __family;                                     \
			(key)->local_port = (reversed) ? __rport : __lport;           \
			(key)->remote_port = (reversed) ? __lport : __rport;          \
			accel_copy_ip((key)->local_ip, (reversed) ? __rip : __lip);   \
			accel_copy_ip((key)->remote_ip, (reversed) ? __lip : __rip);  \
		}                                                                     \
		__ret;                                                                \
	})

static __always_inline void accel_copy_ip(__u32 *dst, const __u32 *src)
{
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
}

/* The key a listening socket of `family` on ip:port is recorded under.
 * 0.0.0.0 (as ::ffff:0.0.0.0) and :: are both "any address", stored as
 * zero; the family tells them apart. */
static __always_inline void accel_fill_listen_key(struct accel_listen_key *lk, __u64 netns, __u32 port, const __u32 *ip,
						  __u32 family)
{
	__builtin_memset(lk, 0, sizeof(*lk));
	lk->netns = netns;
	lk->port = port;
	lk->family = family;
	if (ip[0] | ip[1] | ip[3] || (ip[2] && ip[2] != bpf_htonl(0x0000ffff)))
		accel_copy_ip(lk->ip, ip);
}

/* Could the peer address be one of this host's own? Loopback (127.0.0.0/8,
 * ::1) or the socket's own address (a connection to one of the host's own
 * interface addresses uses that address as its source too). */
static __always_inline int accel_peer_is_local(const struct accel_sock_key *key)
{
	const __u32 *r = key->remote_ip;
	const __u32 *l = key->local_ip;

	if (key->family == AF_INET) {
		if ((bpf_ntohl(r[3]) >> 24) == 127)
			return 1;
	} else if (r[0] == 0 && r[1] == 0 && r[2] == 0 && r[3] == bpf_htonl(1)) {
		return 1;
	}
	return r[0] == l[0] && r[1] == l[1] && r[2] == l[2] && r[3] == l[3];
}

#endif /* ACCEL_KEY_H */
