/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The two maps of the node that are not an attachment's: the listening
 * sockets of the accel proxies running on this host, each registered by its
 * proxy at start (src/maps/proxy-listeners.ts), and the proxies' own
 * upstream sockets (src/maps/proxy-sockets.ts). User space points their pin
 * paths at /sys/fs/bpf/accel/accel_proxy_listeners and
 * /sys/fs/bpf/accel/accel_proxy_sockets before it loads an object that
 * includes this file, so every attachment's programs and every proxy use
 * the same maps, whichever of them starts first.
 *
 * A socket enters only through a process that may write that pin (root);
 * it leaves by itself when it closes, so a dead proxy's entry is gone with
 * it. Only a socket found here receives a new intercepted connection: a
 * listener anyone else opens on the proxy port gets nothing.
 */
#ifndef ACCEL_PROXY_MAPS_H
#define ACCEL_PROXY_MAPS_H

#include "accel.h"

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_PROXY_LISTENERS_MAX);
	__type(key, struct accel_proxy_key);
	__type(value, __u64);
} accel_proxy_listeners SEC(".maps");

/*
 * The upstream sockets of the accel proxies: a proxy stores an entry on
 * each socket it makes, before it connects (user space updates socket
 * storage with the socket's fd as key). The egress programs never steer or
 * refuse a SYN of such a socket. Unlike a mark (SO_MARK needs only
 * CAP_NET_RAW), no process of the cgroup can put a socket here: it takes
 * this map, which only root opens. The entry goes with its socket.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} accel_proxy_sockets SEC(".maps");

/* Is the packet's socket one of the proxies' upstream sockets? */
static __always_inline int accel_proxy_socket(struct __sk_buff *skb)
{
	struct bpf_sock *sk = skb->sk;

	if (!sk)
		return 0;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 0;
	return bpf_sk_storage_get(&accel_proxy_sockets, sk, 0, 0) != NULL;
}

#endif /* ACCEL_PROXY_MAPS_H */
