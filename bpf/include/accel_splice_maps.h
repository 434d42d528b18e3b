/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Maps of the in-kernel splice (sksplice.c). One set per owning process
 * (accel proxy --splice, accel echo, accel relay), pinned by name under the
 * pin root user space opens the object with,
 * /sys/fs/bpf/accel/splice-<owner>-<pid>/.
 */
#ifndef ACCEL_SPLICE_MAPS_H
#define ACCEL_SPLICE_MAPS_H

#include "accel.h"

/*
 * Where a spliced socket's data goes. A socket is stored under the cookie of
 * the socket whose data it must send: for a pair (a, b), b under cookie(a)
 * and a under cookie(b); an echo socket under its own cookie. No program is
 * attached to this map: being in it does not change how a socket receives.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_SOCKHASH_MAX);
	__type(key, __u64);
	__type(value, __u64);
} accel_splice_hash SEC(".maps");

/*
 * Sockets whose incoming data the verdict program takes, each under its own
 * cookie. A socket enters only once its destination is in accel_splice_hash,
 * so the program never meets a socket whose peer is missing; two maps make
 * the hand-off of a pair a sequence in which every step is complete (one
 * map would leave the first socket of a pair in it, peerless, until the
 * second went in). Every entry disappears with its socket.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_SOCKHASH_MAX);
	__type(key, __u64);
	__type(value, __u64);
} accel_splice_active SEC(".maps");

/* Socket cookie -> struct accel_splice_sock (SK_SKB programs cannot use
 * socket storage). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_SOCKHASH_MAX);
	__type(key, __u64);
	__type(value, struct accel_splice_sock);
} accel_splice_socks SEC(".maps");

/*
 * Sockets whose destination is congested (cookie -> 1), added by the verdict
 * program: the verdict cannot make TCP wait, and what it redirects to a
 * destination that does not send waits in that destination's psock, bounded
 * by nothing. The owning process polls this map, takes each socket in it
 * out of accel_splice_active (TCP then keeps its bytes in the receive queue
 * and its window closes; src/splice/holds.ts) and deletes the entry once the
 * destination has drained.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_SOCKHASH_MAX);
	__type(key, __u64);
	__type(value, __u32);
} accel_splice_held SEC(".maps");

/* Shared by every CPU (not per-CPU) so that user space can add the pair
 * counts it owns; the program adds with atomics. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_SPLICE_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} accel_splice_counters SEC(".maps");

static __always_inline void accel_splice_count(enum accel_splice_counter idx, __u64 n)
{
	__u32 key = idx;
	__u64 *val = bpf_map_lookup_elem(&accel_splice_counters, &key);

	if (val)
		__sync_fetch_and_add(val, n);
}

#endif /* ACCEL_SPLICE_MAPS_H */
