// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * A cgroup's id and level as the kernel knows them, for interception:
 * tc_tproxy.c matches a packet's cgroup with
 * bpf_skb_ancestor_cgroup_id(skb, level), whose level counts from the root
 * of the whole hierarchy (cgroup->level). Counting directories below the
 * cgroup2 mount gets it wrong where the mount shows a subtree: inside a
 * cgroup namespace (a container's /sys/fs/cgroup), or a mount of a
 * subdirectory. User space runs this iter/cgroup program on the one cgroup
 * it opened (BPF_CGROUP_ITER_SELF_ONLY) and reads back two u64: the id,
 * to check it visited that cgroup, then the level.
 */
#include "accel_common.h"

SEC("iter/cgroup")
int accel_iter_cgroup_level(struct bpf_iter__cgroup *ctx)
{
	struct cgroup *cgrp = ctx->cgroup;
	__u64 rec[2];

	if (!cgrp)
		return 0;
	rec[0] = cgrp->kn->id;
	rec[1] = cgrp->level;
	bpf_seq_write(ctx->meta->seq, rec, sizeof(rec));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
