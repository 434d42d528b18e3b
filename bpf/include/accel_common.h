/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Includes every accel BPF program starts with. vmlinux.h is generated at
 * build time from the running kernel's BTF (CO-RE). */
#ifndef ACCEL_COMMON_H
#define ACCEL_COMMON_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define SK_DROP 0
#define SK_PASS 1

#endif /* ACCEL_COMMON_H */
