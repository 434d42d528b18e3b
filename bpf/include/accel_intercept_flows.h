/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * What sockops.c does for the interception: it finds the steered flow a
 * connection is (tc_tproxy.c made it on the SYN), so that both ends of the
 * application <-> proxy hop can go on the fast path, watches the
 * connecting sockets of the cgroup while an interception is installed, and
 * moves a flow to the closed set when its application's socket closes.
 * Only sockops.c includes this file.
 */
#ifndef ACCEL_INTERCEPT_FLOWS_H
#define ACCEL_INTERCEPT_FLOWS_H

#include "accel_common.h"
#include "accel_key.h"
#include "accel_intercept_maps.h"

/* The steered flow this connection is, or NULL. The flow is keyed as the
 * application's socket sees it: for the proxy's side (passive) that is the
 * reversed key. */
static __always_inline struct accel_tproxy_flow *accel_steered(struct bpf_sock_ops *skops,
							       const struct accel_sock_key *key, int passive)
{
	struct accel_sock_key app;
	void *flows = accel_tp_flows();

	if (!flows)
		return NULL;
	if (!passive)
		return bpf_map_lookup_elem(flows, key);
	ACCEL_KEY_FROM_CTX(skops, &app, 1, key->netns);
	return bpf_map_lookup_elem(flows, &app);
}

/* A connecting socket while an interception is installed: its close must be
 * seen, whether or not its SYN gets steered (the flow is made after this). */
static __always_inline void accel_on_connect(struct bpf_sock_ops *skops)
{
	if (accel_tp_flows())
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* The application's socket of a steered flow closed (this runs before a
 * RST the close sends): the flow leaves the live set for the closed one,
 * where the socket's last packets still find it. Only the application's
 * socket has its own view as a flow key; the proxy's side never matches. */
static __always_inline void accel_flow_closed(const struct accel_sock_key *key)
{
	struct accel_tproxy_flow *flow;
	void *flows = accel_tp_flows();

	if (!flows)
		return;
	flow = bpf_map_lookup_elem(flows, key);
	if (!flow)
		return;
	bpf_map_update_elem(&accel_tproxy_closed, key, flow, BPF_ANY);
	bpf_map_delete_elem(flows, key);
	accel_tp_count(ACCEL_TP_FLOWS_CLOSED);
}

#endif /* ACCEL_INTERCEPT_FLOWS_H */
