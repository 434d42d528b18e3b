// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Not a program: built into layout.btf.o, never loaded. One variable of
 * each struct and enum of accel.h that user space mirrors, so that all of
 * them are in this object's BTF, where test/maps/layout.test.ts compares
 * them with src/maps/layout/. The loaded objects carry no such anchors (a
 * struct only on a program's stack, or an enum only used for its
 * constants, leaves no trace in their BTF).
 */
#include "vmlinux.h"
#include "accel.h"

#define ACCEL_BTF(type, name) type name __attribute__((used))

/* Shared: keys of the fast path and of the interception. */
ACCEL_BTF(struct accel_sock_key, accel_sock_key_btf);

/* Fast path (sockops.c, skmsg.c, stream_verdict.c, iter_listeners.c). */
ACCEL_BTF(struct accel_listen_key, accel_listen_key_btf);
ACCEL_BTF(struct accel_listener_rec, accel_listener_rec_btf);
ACCEL_BTF(struct accel_config, accel_config_btf);
ACCEL_BTF(struct accel_member, accel_member_btf);
ACCEL_BTF(struct accel_sock_state, accel_sock_state_btf);
ACCEL_BTF(struct accel_shortcut, accel_shortcut_btf);
ACCEL_BTF(enum accel_counter, accel_counter_btf);

/* Interception (tc_tproxy.c, cgroup_egress.c). */
ACCEL_BTF(struct accel_intercept_rule, accel_intercept_rule_btf);
ACCEL_BTF(struct accel_tproxy_config, accel_tproxy_config_btf);
ACCEL_BTF(struct accel_tproxy_flow, accel_tproxy_flow_btf);
ACCEL_BTF(struct accel_proxy_key, accel_proxy_key_btf);
ACCEL_BTF(enum accel_tproxy_counter, accel_tproxy_counter_btf);
ACCEL_BTF(struct accel_tproxy_egress, accel_tproxy_egress_btf);

/* Splice (sksplice.c). */
ACCEL_BTF(struct accel_splice_sock, accel_splice_sock_btf);
ACCEL_BTF(enum accel_splice_counter, accel_splice_counter_btf);
