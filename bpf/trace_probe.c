// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Not part of any data path: a tracing program that does nothing, loaded
 * and attached for a moment by `accel verify --bpftrace` where the kernel
 * has no kprobes, to learn whether tracing programs (fentry, through BTF)
 * load and attach here, which bpftrace's kfunc: probes need. A kernel
 * locked down against tracing refuses the load with EPERM even for root;
 * the configuration alone does not tell (src/bpf/tracing.ts).
 */
#include "accel_common.h"
#include <bpf/bpf_tracing.h>

SEC("fentry/tcp_bpf_update_proto")
int BPF_PROG(accel_trace_probe)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
