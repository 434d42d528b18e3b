/**
 * User-space mirror of the interception's structs and counters in
 * bpf/include/accel.h (tc_tproxy.c). test/maps/layout.test.ts compares
 * TPROXY_BTF with the BTF of layout.btf.o.
 */
import { AF_INET, AF_INET6, type BtfMirrors, ipToBytes } from './shared.js';

/** struct accel_intercept_rule */
export const InterceptRuleLayout = {
  size: 40,
  fields: {
    ip: { offset: 0, size: 16 },
    mask: { offset: 16, size: 16 },
    port_min: { offset: 32, size: 4 },
    port_max: { offset: 36, size: 4 },
  },
} as const;

/** struct accel_tproxy_config */
export const TproxyConfigLayout = {
  size: 40,
  fields: {
    cgroup_id: { offset: 0, size: 8 },
    cgroup_level: { offset: 8, size: 4 },
    proxy_port: { offset: 12, size: 4 },
    lo_ifindex: { offset: 16, size: 4 },
    intercept_mark: { offset: 20, size: 4 },
    proxy_mark: { offset: 24, size: 4 },
    rule_count: { offset: 28, size: 4 },
    flags: { offset: 32, size: 4 },
  },
} as const;

/** ACCEL_TP_F_SK_LOOKUP: sk_lookup.c is attached to the namespace. */
export const TP_F_SK_LOOKUP = 1;

/** struct accel_tproxy_flow */
export const TproxyFlowLayout = {
  size: 8,
  fields: {
    proxy_port: { offset: 0, size: 4 },
    proxy_in_cgroup: { offset: 4, size: 4 },
  },
} as const;

/** struct accel_proxy_key (key of accel_proxy_listeners) */
export const ProxyKeyLayout = {
  size: 16,
  fields: {
    netns: { offset: 0, size: 8 },
    family: { offset: 8, size: 4 },
    port: { offset: 12, size: 4 },
  },
} as const;

/** ACCEL_IFACES_MAX: devices one interception hooks at most. */
export const IFACES_MAX = 16;
/** ACCEL_EGRESS_REFUSE_UDP */
export const EGRESS_REFUSE_UDP = 1;

/** struct accel_tproxy_egress (cgroup_egress.c's settings) */
export const TproxyEgressLayout = {
  size: 8 + 4 * IFACES_MAX,
  fields: {
    flags: { offset: 0, size: 4 },
    iface_count: { offset: 4, size: 4 },
    ifindex: { offset: 8, size: 4 * IFACES_MAX },
  },
} as const;

export interface TproxyEgress {
  refuseUdp: boolean;
  /** The devices the tc egress program is hooked on. */
  ifindexes: number[];
}

export function encodeTproxyEgress(e: TproxyEgress): Buffer {
  if (e.ifindexes.length > IFACES_MAX) throw new RangeError(`at most ${IFACES_MAX} interfaces`);
  const f = TproxyEgressLayout.fields;
  const b = Buffer.alloc(TproxyEgressLayout.size);
  b.writeUInt32LE(e.refuseUdp ? EGRESS_REFUSE_UDP : 0, f.flags.offset);
  b.writeUInt32LE(e.ifindexes.length, f.iface_count.offset);
  e.ifindexes.forEach((ix, i) => b.writeUInt32LE(ix, f.ifindex.offset + 4 * i));
  return b;
}

/** accel_proxy_sockets as bpf/include/accel_proxy_maps.h declares it. */
export const ProxySocketsMapDef = {
  /** BPF_MAP_TYPE_SK_STORAGE */
  type: 24,
  keySize: 4,
  valueSize: 8,
  maxEntries: 0,
  /** BPF_F_NO_PREALLOC */
  flags: 1,
} as const;

/** ACCEL_PROXY_LISTENERS_MAX */
export const PROXY_LISTENERS_MAX = 1024;

/** accel_proxy_listeners as bpf/include/accel_proxy_maps.h declares it,
 * for user space to make it with (test/maps/proxy-listeners.test.ts reads
 * the declaration from tc_tproxy.bpf.o). */
export const ProxyListenersMapDef = {
  /** BPF_MAP_TYPE_SOCKHASH */
  type: 18,
  keySize: ProxyKeyLayout.size,
  valueSize: 8,
  maxEntries: PROXY_LISTENERS_MAX,
  flags: 0,
} as const;

/** enum accel_tproxy_counter, in order, with the C enumerator names. */
export const TPROXY_COUNTER_ENUM = {
  packets_seen: 'ACCEL_TP_PACKETS_SEEN',
  packets_intercepted: 'ACCEL_TP_PACKETS_INTERCEPTED',
  connections_intercepted: 'ACCEL_TP_SYN_INTERCEPTED',
  proxy_packets_skipped: 'ACCEL_TP_PROXY_SKIPPED',
  assigned_established: 'ACCEL_TP_ASSIGNED_ESTABLISHED',
  assigned_listener: 'ACCEL_TP_ASSIGNED_LISTENER',
  assign_failed: 'ACCEL_TP_ASSIGN_FAILED',
  no_listener: 'ACCEL_TP_NO_LISTENER',
  foreign_listener: 'ACCEL_TP_FOREIGN_LISTENER',
  /** Packets of the cgroup the egress program cannot match safely, dropped. */
  unparsed_dropped: 'ACCEL_TP_UNPARSED_DROPPED',
  /** SYNs that found the flow map full (--max-flows), dropped. */
  flows_full: 'ACCEL_TP_FLOWS_FULL',
  /** Steered SYNs with IPv4 options or IPv6 extension headers. */
  syn_ip_options: 'ACCEL_TP_SYN_IP_OPTIONS',
  /** Flows removed because the application's socket closed. */
  flows_closed: 'ACCEL_TP_FLOWS_CLOSED',
  /** SYNs of the cgroup with the proxy mark from a socket not the proxy's:
   * steered like any other. */
  proxy_mark_forged: 'ACCEL_TP_MARK_FORGED',
  /** Steered SYNs whose 4-tuple a proxy-side socket still held (TIME_WAIT):
   * given to the proxy listener, never to that socket. */
  syn_tuple_busy: 'ACCEL_TP_SYN_TUPLE_BUSY',
  /** SYNs of the cgroup to a covered destination leaving by a device
   * interception does not hook, dropped (cgroup_egress.c). */
  unhooked_refused: 'ACCEL_TP_UNHOOKED_REFUSED',
  /** UDP of the cgroup to a covered destination, refused
   * (--intercept-udp refuse). */
  udp_refused: 'ACCEL_TP_UDP_REFUSED',
  /** Steered SYNs whose 4-tuple a proxy-side TIME_WAIT socket held, left
   * to the kernel to retire it (sk_lookup.c then finds the proxy). */
  syn_tw_retired: 'ACCEL_TP_SYN_TW_RETIRED',
  /** Of those, handed to the proxy listener by sk_lookup.c. */
  tw_assigned: 'ACCEL_TP_TW_ASSIGNED',
  /** Of those, dropped (not recorded, or no proxy listener). */
  tw_dropped: 'ACCEL_TP_TW_DROPPED',
} as const;
export type TproxyCounterName = keyof typeof TPROXY_COUNTER_ENUM;
export const TPROXY_COUNTERS = Object.keys(TPROXY_COUNTER_ENUM) as TproxyCounterName[];
export type TproxyCounters = Record<TproxyCounterName, bigint>;

export const TPROXY_BTF: BtfMirrors = {
  structs: {
    accel_intercept_rule: InterceptRuleLayout,
    accel_tproxy_config: TproxyConfigLayout,
    accel_tproxy_flow: TproxyFlowLayout,
    accel_proxy_key: ProxyKeyLayout,
    accel_tproxy_egress: TproxyEgressLayout,
  },
  enums: {
    accel_tproxy_counter: { enumerators: Object.values(TPROXY_COUNTER_ENUM), max: 'ACCEL_TP_MAX' },
  },
};

/** A rule as parsed (net/rules.ts), which the BPF side matches as a
 * destination prefix and ports. */
export type { InterceptRule } from '../../net/rules.js';
import type { InterceptRule } from '../../net/rules.js';

export function encodeInterceptRule(r: InterceptRule): Buffer {
  const f = InterceptRuleLayout.fields;
  const b = Buffer.alloc(InterceptRuleLayout.size);
  // IPv4 prefixes cover the 96 bits of the ::ffff: prefix as well.
  const bits = r.family === 'ipv4' ? 96 + r.prefixLength : r.prefixLength;
  const ip = ipToBytes(r.address);
  for (let i = 0; i < 16; i++) {
    const m = bits >= 8 * (i + 1) ? 0xff : bits <= 8 * i ? 0 : (0xff << (8 - (bits - 8 * i))) & 0xff;
    b[f.mask.offset + i] = m;
    b[f.ip.offset + i] = (ip[i] ?? 0) & m;
  }
  b.writeUInt32LE(r.portMin, f.port_min.offset);
  b.writeUInt32LE(r.portMax, f.port_max.offset);
  return b;
}

export interface TproxyConfig {
  cgroupId: bigint;
  cgroupLevel: number;
  proxyPort: number;
  loIfindex: number;
  interceptMark: number;
  proxyMark: number;
  ruleCount: number;
  /** TP_F_* */
  flags: number;
}

export function encodeTproxyConfig(c: TproxyConfig): Buffer {
  const f = TproxyConfigLayout.fields;
  const b = Buffer.alloc(TproxyConfigLayout.size);
  b.writeBigUInt64LE(c.cgroupId, f.cgroup_id.offset);
  b.writeUInt32LE(c.cgroupLevel, f.cgroup_level.offset);
  b.writeUInt32LE(c.proxyPort, f.proxy_port.offset);
  b.writeUInt32LE(c.loIfindex, f.lo_ifindex.offset);
  b.writeUInt32LE(c.interceptMark >>> 0, f.intercept_mark.offset);
  b.writeUInt32LE(c.proxyMark >>> 0, f.proxy_mark.offset);
  b.writeUInt32LE(c.ruleCount, f.rule_count.offset);
  b.writeUInt32LE(c.flags >>> 0, f.flags.offset);
  return b;
}

export function decodeTproxyConfig(b: Buffer): TproxyConfig {
  const f = TproxyConfigLayout.fields;
  return {
    cgroupId: b.readBigUInt64LE(f.cgroup_id.offset),
    cgroupLevel: b.readUInt32LE(f.cgroup_level.offset),
    proxyPort: b.readUInt32LE(f.proxy_port.offset),
    loIfindex: b.readUInt32LE(f.lo_ifindex.offset),
    interceptMark: b.readUInt32LE(f.intercept_mark.offset),
    proxyMark: b.readUInt32LE(f.proxy_mark.offset),
    ruleCount: b.readUInt32LE(f.rule_count.offset),
    flags: b.readUInt32LE(f.flags.offset),
  };
}

/** A proxy's listening socket as accel_proxy_listeners is keyed: its
 * network namespace cookie, family and port. */
export interface ProxyKey {
  netns: bigint;
  family: 4 | 6;
  port: number;
}

export function encodeProxyKey(k: ProxyKey): Buffer {
  const f = ProxyKeyLayout.fields;
  const b = Buffer.alloc(ProxyKeyLayout.size);
  b.writeBigUInt64LE(k.netns, f.netns.offset);
  b.writeUInt32LE(k.family === 4 ? AF_INET : AF_INET6, f.family.offset);
  b.writeUInt32LE(k.port, f.port.offset);
  return b;
}

export function decodeProxyKey(b: Buffer): ProxyKey {
  const f = ProxyKeyLayout.fields;
  return { netns: b.readBigUInt64LE(f.netns.offset), family: b.readUInt32LE(f.family.offset) === AF_INET ? 4 : 6, port: b.readUInt32LE(f.port.offset) };
}
