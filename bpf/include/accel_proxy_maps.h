/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The one map of the node that is not an attachment's: the listening
 * sockets of the accel proxies running on this host, each registered by its
 * proxy at start (src/maps/proxy-listeners.ts). Only tc_tproxy.c includes
 * this file. User space points the map's pin path at
 * /sys/fs/bpf/accel/accel_proxy_listeners before it loads tc_tproxy.bpf.o,
 * so every attachment's lo program and every proxy use the same map,
 * whichever of them starts first.
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

#endif /* ACCEL_PROXY_MAPS_H */
