/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Nested attachments: the programs of a cgroup and of each of its ancestors
 * all run on a socket (cgroup links attach with BPF_F_ALLOW_MULTI), so the
 * root and a child, or a cgroup and a grandchild, may both be attached. The
 * innermost attachment owns a socket: the first attached cgroup met going
 * up from the socket's cgroup. Only the owner puts the socket in its map or
 * records it as a listener, with its own settings; every other attachment
 * on the way leaves it alone. So no socket is ever in two maps, and a
 * connection whose two ends have different owners stays on TCP (both ends
 * must be in one map to be redirected).
 *
 * accel_owners is the node's set of attached cgroups (and of running
 * self-tests), by cgroup id: one map for every attachment, pinned at
 * /sys/fs/bpf/accel/accel_owners (src/maps/owners.ts). A cgroup goes in
 * before its sockops link is made and out after the link is gone: in
 * between, its sockets are nobody's and stay on TCP, never in two maps.
 *
 * Only sockops.c includes this file.
 */
#ifndef ACCEL_OWNERS_H
#define ACCEL_OWNERS_H

#include "accel.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__uint(max_entries, ACCEL_OWNERS_MAX);
	__type(key, __u64);
	__type(value, __u32);
} accel_owners SEC(".maps");

/*
 * Is the socket this attachment's (cgroup `self`)? Walks from the socket's
 * cgroup up to `self`; an attached cgroup met before it owns the socket.
 * The socket's cgroup is read from the socket (sk_cgrp_data, the cgroup
 * whose programs run on it), not from the current task: sockops runs in
 * softirq for most events. bpf_sk_cgroup_id() would do, but sockops
 * programs may not call it (6.18). A socket more than
 * ACCEL_OWNER_DEPTH_MAX levels below `self` is not known to be its own:
 * it stays on TCP. self 0: an attachment that does not know its cgroup
 * (made before this), which takes every socket as before.
 */
static __always_inline int accel_owns(struct bpf_sock *bsk, __u64 self)
{
	struct sock *sk;
	struct cgroup *cg;

	if (!self)
		return 1;
	if (!bsk)
		return 0;
	sk = bpf_rdonly_cast(bsk, bpf_core_type_id_kernel(struct sock));
	cg = sk->sk_cgrp_data.cgroup;
	for (int i = 0; i < ACCEL_OWNER_DEPTH_MAX; i++) {
		struct cgroup_subsys_state *parent;
		__u64 id;

		if (!cg)
			return 0;
		id = cg->kn->id;
		if (id == self)
			return 1;
		if (bpf_map_lookup_elem(&accel_owners, &id))
			return 0;
		parent = cg->self.parent;
		cg = parent ? parent->cgroup : NULL;
	}
	return 0;
}

#endif /* ACCEL_OWNERS_H */
