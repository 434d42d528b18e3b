// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * A stream-verdict program that passes every skb unchanged.
 *
 * Why it exists: on kernels carrying commit 929e30f93125 (stable 6.6.128+,
 * 6.12.75+, 6.18.14+) without its fix 04af4efde58a, a socket that sits in a
 * SOCKHASH with only an SK_MSG program reports FIONREAD == 0 and misses
 * epoll wake-ups, so epoll-based readers stall. With a stream verdict on
 * the same map the kernel takes the receive path that signals readiness.
 * accel attaches it only when its self-test shows the plain setup stalls.
 */
#include "accel_common.h"

SEC("sk_skb/stream_verdict")
int accel_skskb_pass(struct __sk_buff *skb)
{
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
