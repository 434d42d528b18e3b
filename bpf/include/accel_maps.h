/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Every map of the local fast path (the interception's are in
 * accel_intercept_maps.h). Each object that includes this file declares
 * them all, pinned by name
 * (LIBBPF_PIN_BY_NAME): user space opens the objects with the attachment's
 * directory as pin root (/sys/fs/bpf/accel/cgroup-<id>/), so the first
 * object loaded creates and pins each map there and every later one uses
 * the pinned map (libbpf checks that type, key, value, size and flags
 * agree). A map only one object needs is declared in that object, unpinned.
 */
#ifndef ACCEL_MAPS_H
#define ACCEL_MAPS_H

#include "accel.h"

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_SOCKHASH_MAX);
	__type(key, struct accel_sock_key);
	__type(value, __u64);
} accel_sock_hash SEC(".maps");

/* Sockets of the cgroup that are, or are about to be, in accel_sock_hash
 * (the peer of a newly established socket is checked here), with what
 * skmsg.c needs to find the peer's struct sock. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_SOCKHASH_MAX);
	__type(key, struct accel_sock_key);
	__type(value, struct accel_member);
} accel_members SEC(".maps");

/* accel proxy's upstream sockets connected to other hosts (sockops.c: any
 * socket of the cgroup that carries a mark), with the same record as a
 * member: never in accel_sock_hash by themselves; accel proxy puts one
 * there for an egress shortcut (accel_shortcut.h). Apart from
 * accel_members, so that they never crowd out the fast path's sockets: a
 * full map only costs a connection its egress shortcut. Not preallocated
 * (most attachments have no proxy). Each leaves at its socket's close. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, ACCEL_SOCKHASH_MAX);
	__type(key, struct accel_sock_key);
	__type(value, struct accel_member);
} accel_upstreams SEC(".maps");

/* Shortcuts made by accel proxy between two local sockets it stands
 * between (struct accel_shortcut), keyed by the sending socket's own key.
 * The proxy deletes both of a connection's when it ends; sockops.c deletes
 * a sender's when the sender closes (a proxy killed cannot). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, ACCEL_SOCKHASH_MAX);
	__type(key, struct accel_sock_key);
	__type(value, struct accel_shortcut);
} accel_shortcuts SEC(".maps");

/* Listening sockets of the cgroup, with a count (SO_REUSEPORT groups),
 * changed by compare-and-swap (accel_listener_add). Not preallocated: a
 * removed element is not reused under a program that still points to it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_LISTENERS_MAX);
	__type(key, struct accel_listen_key);
	__type(value, __u32);
} accel_listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} accel_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct accel_config);
} accel_config SEC(".maps");

/* TCP ports (host order) whose connections never enter the fast path,
 * for example a service that reads with splice(2). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_BYPASS_MAX);
	__type(key, __u32);
	__type(value, __u32);
} accel_bypass SEC(".maps");

/* Socket cookie -> struct accel_rx_seq, for sockets the stream verdict has
 * seen (SK_SKB programs cannot use socket storage). sockops.c deletes an
 * entry when its socket closes; LRU, so that an entry the verdict might
 * create after that cannot crowd out live ones. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_SOCKHASH_MAX);
	__type(key, __u64);
	__type(value, struct accel_rx_seq);
} accel_rx_seqs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct accel_sock_state);
} accel_sk_state SEC(".maps");

static __always_inline void accel_count(enum accel_counter idx, __u64 n)
{
	__u32 key = idx;
	__u64 *val = bpf_map_lookup_elem(&accel_counters, &key);

	if (val)
		*val += n; /* per-CPU slot: no atomics needed */
}

/* How often a listener count is tried again when another CPU changed it
 * in between (its compare-and-swap failed, or it was being removed). */
#define ACCEL_LISTENER_TRIES 64

/* One more listening socket under lk (SO_REUSEPORT groups share a key).
 * Listeners of one group may start and close at once on several CPUs, so
 * the count changes only by compare-and-swap: the first inserts 1
 * (BPF_NOEXIST: of two first ones, one inserts and the other counts), and
 * a count at 0 is one whose last listener closed and whose removal is
 * under way on another CPU (see accel_listener_del): it is not revived,
 * but inserted again once gone. The map is not preallocated, so an
 * element removed meanwhile is not reused while this program still holds
 * a pointer to it. */
static __always_inline void accel_listener_add(const struct accel_listen_key *lk)
{
	__u32 one = 1;

	for (int i = 0; i < ACCEL_LISTENER_TRIES; i++) {
		__u32 *count, old;

		if (!bpf_map_update_elem(&accel_listeners, lk, &one, BPF_NOEXIST))
			return;
		count = bpf_map_lookup_elem(&accel_listeners, lk);
		if (!count)
			continue;
		old = *(volatile __u32 *)count;
		if (old && __sync_val_compare_and_swap(count, old, old + 1) == old)
			return;
	}
}

/* One listening socket fewer under lk; the record goes with the last one.
 * Only the CPU that takes the count from 1 to 0 removes it, and nobody
 * counts on an element at 0, so the removal never takes a live count. */
static __always_inline void accel_listener_del(const struct accel_listen_key *lk)
{
	for (int i = 0; i < ACCEL_LISTENER_TRIES; i++) {
		__u32 *count = bpf_map_lookup_elem(&accel_listeners, lk), old;

		if (!count)
			return;
		old = *(volatile __u32 *)count;
		if (!old)
			return;
		if (__sync_val_compare_and_swap(count, old, old - 1) == old) {
			if (old == 1)
				bpf_map_delete_elem(&accel_listeners, lk);
			return;
		}
	}
}

static __always_inline struct accel_config *accel_get_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&accel_config, &zero);
}

#endif /* ACCEL_MAPS_H */
