// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * No program: the declaration of the node's maps of proxy listeners and
 * proxy sockets (accel_proxy_maps.h), which user space loads to make them
 * when they are missing. Socket storage needs the BTF of its value, which
 * libbpf gives it from this object (src/maps/proxy-sockets.ts).
 */
#include "accel_common.h"
#include "accel_proxy_maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";
