// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The listener lookup of a SYN that retires a proxy-side TIME_WAIT socket
 * (BPF_PROG_TYPE_SK_LOOKUP, attached to the interception's network
 * namespace by a link).
 *
 * tc_tproxy.c leaves a steered SYN whose 4-tuple a TIME_WAIT socket of the
 * proxy's side still holds to the kernel, and records it in
 * accel_tproxy_tw with the key of the proxy listener it must reach. The
 * kernel retires the TIME_WAIT socket (tcp_timewait_state_process:
 * TCP_TW_SYN) and looks up a listener for the packet's own destination,
 * the original server; this program runs in that lookup and hands the SYN
 * to the proxy's registered listener instead. Without one, the lookup
 * fails (SK_DROP): never the original server. Any other lookup is not
 * ours (SK_PASS).
 */
#include "accel_common.h"
#include "accel_intercept_maps.h"
#include "accel_proxy_maps.h"
#include "accel_key.h"

#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif

SEC("sk_lookup")
int accel_sk_lookup(struct bpf_sk_lookup *ctx)
{
	struct accel_proxy_key *want, pk;
	struct accel_sock_key key = {};
	struct bpf_sock *sk;
	long err;

	accel_build_variant();
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	key.family = ctx->family;
	key.local_port = ctx->local_port;
	key.remote_port = bpf_ntohs(ctx->remote_port);
	if (ctx->family == AF_INET) {
		accel_ip4_to_mapped(key.local_ip, ctx->local_ip4);
		accel_ip4_to_mapped(key.remote_ip, ctx->remote_ip4);
	} else if (ctx->family == AF_INET6) {
		/* Field by field: the verifier allows no pointer into ctx. */
		key.local_ip[0] = ctx->local_ip6[0];
		key.local_ip[1] = ctx->local_ip6[1];
		key.local_ip[2] = ctx->local_ip6[2];
		key.local_ip[3] = ctx->local_ip6[3];
		key.remote_ip[0] = ctx->remote_ip6[0];
		key.remote_ip[1] = ctx->remote_ip6[1];
		key.remote_ip[2] = ctx->remote_ip6[2];
		key.remote_ip[3] = ctx->remote_ip6[3];
	} else {
		return SK_PASS;
	}
	want = bpf_map_lookup_elem(&accel_tproxy_tw, &key);
	if (!want)
		return SK_PASS;
	pk = *want;
	bpf_map_delete_elem(&accel_tproxy_tw, &key);

	sk = bpf_map_lookup_elem(&accel_proxy_listeners, &pk);
	if (!sk) {
		accel_tp_count(ACCEL_TP_TW_DROPPED);
		return SK_DROP;
	}
	if (sk->state != BPF_TCP_LISTEN) {
		bpf_sk_release(sk);
		accel_tp_count(ACCEL_TP_TW_DROPPED);
		return SK_DROP;
	}
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		accel_tp_count(ACCEL_TP_TW_DROPPED);
		return SK_DROP;
	}
	accel_tp_count(ACCEL_TP_TW_ASSIGNED);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
