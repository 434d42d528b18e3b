// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * cgroup/sock_create on the proxy's own cgroup: every TCP socket a proxy
 * process makes is recorded as the proxy's (accel_proxy_sockets, the entry
 * interception's egress programs look for) and given the proxy mark, in the
 * kernel, when socket() returns. The proxy then connects upstream with a
 * plain socket of its runtime instead of making each one by hand with
 * SO_MARK and a map update (src/proxy/own-sockets.ts).
 *
 * Only the processes in accel_proxy_processes (their thread group ids, as
 * the kernel's initial pid namespace counts them, with the mark each puts
 * on its sockets) are recognised. The proxy loads this object and fills the
 * map itself; neither is pinned, so nothing else can add to it, and both go
 * with the proxy's last descriptor of them (the attachment too). Another
 * process of the same cgroup, whatever its capabilities, creates its
 * sockets unrecorded: a mark it sets itself is still steered
 * (tc_tproxy.c, ACCEL_TP_MARK_FORGED).
 */
#include "accel_common.h"
#include "accel_proxy_maps.h"

#define ACCEL_AF_INET 2
#define ACCEL_AF_INET6 10
#define ACCEL_SOCK_STREAM 1
#define ACCEL_IPPROTO_TCP 6
#define ACCEL_PROXY_PROCESSES_MAX 64

/* Thread group id -> the mark of its sockets. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, ACCEL_PROXY_PROCESSES_MAX);
	__type(key, __u32);
	__type(value, __u32);
} accel_proxy_processes SEC(".maps");

SEC("cgroup/sock_create")
int accel_proxy_sock_create(struct bpf_sock *sk)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 *mark;
	__u64 *owner;

	if (sk->type != ACCEL_SOCK_STREAM || sk->protocol != ACCEL_IPPROTO_TCP ||
	    (sk->family != ACCEL_AF_INET && sk->family != ACCEL_AF_INET6))
		return SK_PASS;
	mark = bpf_map_lookup_elem(&accel_proxy_processes, &tgid);
	if (!mark)
		return SK_PASS;
	owner = bpf_sk_storage_get(&accel_proxy_sockets, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	/* Out of memory: the socket stays unrecorded and its SYN is steered
	 * back to the proxy, which refuses it as a loop; never let through. */
	if (owner)
		*owner = tgid;
	sk->mark = *mark;
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
