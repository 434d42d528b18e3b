/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Includes every accel BPF program starts with. vmlinux.h is generated at
 * build time from the running kernel's BTF (CO-RE). */
#ifndef ACCEL_COMMON_H
#define ACCEL_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#define SK_DROP 0
#define SK_PASS 1

/* Kernel 6.2+: read a kernel struct through a pointer the verifier cannot
 * trust (each load fault-tolerant), to look at a socket's queues. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* sk_user_data carries flags in its low bits (SK_USER_DATA_NOCOPY, _BPF,
 * _PSOCK); masked, it is the socket's struct sk_psock. */
#define ACCEL_SK_USER_DATA_PTRMASK (~7UL)

/* The psock of a socket read through bpf_rdonly_cast, or NULL. */
static __always_inline struct sk_psock *accel_psock_of(struct sock *sk)
{
	__u64 ud = (__u64)sk->sk_user_data & ACCEL_SK_USER_DATA_PTRMASK;

	return ud ? bpf_rdonly_cast((void *)ud, bpf_core_type_id_kernel(struct sk_psock)) : NULL;
}

/* A test build (test/integration/upgrade.test.ts, upgrade-intercept.test.ts)
 * is compiled with -DACCEL_TEST_PROGRAM_VARIANT=<n>: its programs (the fast
 * path's and the interception's) then differ from the normal
 * build's (one store to the stack) and do the same, which is what an
 * upgrade to a build whose programs changed needs. Nothing otherwise. */
#ifdef ACCEL_TEST_PROGRAM_VARIANT
#define accel_build_variant()                                          \
	do {                                                           \
		volatile __u32 __variant = ACCEL_TEST_PROGRAM_VARIANT; \
		(void)__variant;                                       \
	} while (0)
#else
#define accel_build_variant() \
	do {                  \
	} while (0)
#endif

#endif /* ACCEL_COMMON_H */
