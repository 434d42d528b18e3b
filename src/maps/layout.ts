/**
 * User-space mirror of bpf/include/accel.h. Must stay in sync with it:
 * test/maps/layout.test.ts compares these offsets and sizes with the BTF of
 * the compiled BPF objects.
 */
import net from 'node:net';

export const AF_INET = 2;
export const AF_INET6 = 10;

/** struct accel_sock_key */
export const SockKeyLayout = {
  size: 56,
  fields: {
    netns: { offset: 0, size: 8 },
    family: { offset: 8, size: 4 },
    local_port: { offset: 12, size: 4 },
    remote_port: { offset: 16, size: 4 },
    pad: { offset: 20, size: 4 },
    local_ip: { offset: 24, size: 16 },
    remote_ip: { offset: 40, size: 16 },
  },
} as const;

/** struct accel_listen_key */
export const ListenKeyLayout = {
  size: 32,
  fields: {
    netns: { offset: 0, size: 8 },
    port: { offset: 8, size: 4 },
    family: { offset: 12, size: 4 },
    ip: { offset: 16, size: 16 },
  },
} as const;

/** struct accel_config */
export const ConfigLayout = {
  size: 8,
  fields: {
    redirect_enabled: { offset: 0, size: 4 },
    queue_limit: { offset: 4, size: 4 },
  },
} as const;

/** struct accel_member: value of accel_members. */
export const MemberLayout = {
  size: 16,
  fields: {
    sk: { offset: 0, size: 8 },
    cookie: { offset: 8, size: 8 },
  },
} as const;

/** struct accel_sock_state */
export const SockStateLayout = {
  size: 16,
  fields: {
    tcp_only: { offset: 0, size: 4 },
    listener: { offset: 4, size: 4 },
    held: { offset: 8, size: 4 },
    pad: { offset: 12, size: 4 },
  },
} as const;

/** struct accel_listener_rec: a listener iter_listeners.c reports. */
export const ListenerRecLayout = {
  size: 40,
  fields: {
    cookie: { offset: 0, size: 8 },
    cgroup_id: { offset: 8, size: 8 },
    port: { offset: 16, size: 4 },
    pad: { offset: 20, size: 4 },
    ip: { offset: 24, size: 16 },
  },
} as const;

/** enum accel_counter, in order. */
export const COUNTERS = [
  'sockets_inserted',
  'socket_insert_failed',
  'sockets_skipped_remote',
  'sockets_skipped_peer',
  'sockets_skipped_bypass',
  'sockets_skipped_data',
  'messages_redirected',
  'bytes_redirected',
  'messages_passed',
  'bytes_passed',
  'connections_tcp_only',
  'bytes_repeated',
  'bytes_repeat_sent',
  'backpressure_engaged',
  'backpressure_released',
  'bytes_held',
] as const;
export type CounterName = (typeof COUNTERS)[number];
export type Counters = Record<CounterName, bigint>;

/** The C enumerator name for each counter (checked against BTF). */
export const COUNTER_ENUM: Record<CounterName, string> = {
  sockets_inserted: 'ACCEL_CNT_SOCK_INSERTED',
  socket_insert_failed: 'ACCEL_CNT_SOCK_INSERT_FAILED',
  sockets_skipped_remote: 'ACCEL_CNT_SOCK_SKIPPED_REMOTE',
  sockets_skipped_peer: 'ACCEL_CNT_SOCK_SKIPPED_PEER',
  sockets_skipped_bypass: 'ACCEL_CNT_SOCK_SKIPPED_BYPASS',
  sockets_skipped_data: 'ACCEL_CNT_SOCK_SKIPPED_DATA',
  messages_redirected: 'ACCEL_CNT_MSG_REDIRECTED',
  bytes_redirected: 'ACCEL_CNT_BYTES_REDIRECTED',
  messages_passed: 'ACCEL_CNT_MSG_PASSED',
  bytes_passed: 'ACCEL_CNT_BYTES_PASSED',
  connections_tcp_only: 'ACCEL_CNT_CONN_TCP_ONLY',
  bytes_repeated: 'ACCEL_CNT_BYTES_REPEATED',
  bytes_repeat_sent: 'ACCEL_CNT_BYTES_REPEAT_SENT',
  backpressure_engaged: 'ACCEL_CNT_BACKPRESSURE_ON',
  backpressure_released: 'ACCEL_CNT_BACKPRESSURE_OFF',
  bytes_held: 'ACCEL_CNT_BYTES_HELD',
};

export interface SockKey {
  netns: bigint;
  family: 'ipv4' | 'ipv6';
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
}

function ipFromBytes(b: Buffer, family: number): string {
  if (family === AF_INET) return `${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  // Let node normalise (compress zeros) through a round trip.
  const sock = new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' });
  return sock.address;
}

/** 16 bytes in network order, IPv4 as ::ffff:a.b.c.d (the BPF key form). */
export function ipToBytes(address: string): Buffer {
  const out = Buffer.alloc(16);
  if (net.isIPv4(address)) {
    out.writeUInt16BE(0xffff, 10);
    address.split('.').forEach((octet, i) => out.writeUInt8(Number(octet), 12 + i));
    return out;
  }
  if (!net.isIPv6(address)) throw new TypeError(`not an IP address: ${address}`);
  let text = address;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    const o = v4[1].split('.').map(Number);
    text = text.slice(0, -v4[1].length) + `${(((o[0] ?? 0) << 8) | (o[1] ?? 0)).toString(16)}:${(((o[2] ?? 0) << 8) | (o[3] ?? 0)).toString(16)}`;
  }
  const [head = '', tail = ''] = text.split('::');
  const parse = (s: string) => (s ? s.split(':').map((g) => parseInt(g, 16)) : []);
  const h = parse(head);
  const t = text.includes('::') ? parse(tail) : [];
  const groups = [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  groups.forEach((g, i) => out.writeUInt16BE(g, 2 * i));
  return out;
}

export function decodeSockKey(b: Buffer): SockKey {
  const f = SockKeyLayout.fields;
  const family = b.readUInt32LE(f.family.offset);
  return {
    netns: b.readBigUInt64LE(f.netns.offset),
    family: family === AF_INET ? 'ipv4' : 'ipv6',
    localPort: b.readUInt32LE(f.local_port.offset),
    remotePort: b.readUInt32LE(f.remote_port.offset),
    localAddress: ipFromBytes(b.subarray(f.local_ip.offset, f.local_ip.offset + 16), family),
    remoteAddress: ipFromBytes(b.subarray(f.remote_ip.offset, f.remote_ip.offset + 16), family),
  };
}

export function encodeSockKey(k: SockKey): Buffer {
  const f = SockKeyLayout.fields;
  const b = Buffer.alloc(SockKeyLayout.size);
  b.writeBigUInt64LE(k.netns, f.netns.offset);
  b.writeUInt32LE(k.family === 'ipv4' ? AF_INET : AF_INET6, f.family.offset);
  b.writeUInt32LE(k.localPort, f.local_port.offset);
  b.writeUInt32LE(k.remotePort, f.remote_port.offset);
  ipToBytes(k.localAddress).copy(b, f.local_ip.offset);
  ipToBytes(k.remoteAddress).copy(b, f.remote_ip.offset);
  return b;
}

export interface ListenerRec {
  cookie: bigint;
  cgroupId: bigint;
  /** The listening address as text (`::` for any), and port. */
  address: string;
  port: number;
}

/** The records of an iterator's output, one after the other. */
export function decodeListenerRecs(b: Buffer): ListenerRec[] {
  const f = ListenerRecLayout.fields;
  const out: ListenerRec[] = [];
  for (let at = 0; at + ListenerRecLayout.size <= b.length; at += ListenerRecLayout.size) {
    const r = b.subarray(at, at + ListenerRecLayout.size);
    const ip = r.subarray(f.ip.offset, f.ip.offset + 16);
    const mapped = ip.readUInt32BE(0) === 0 && ip.readUInt32BE(4) === 0 && ip.readUInt32BE(8) === 0xffff;
    out.push({
      cookie: r.readBigUInt64LE(f.cookie.offset),
      cgroupId: r.readBigUInt64LE(f.cgroup_id.offset),
      port: r.readUInt32LE(f.port.offset),
      address: ipFromBytes(ip, mapped ? AF_INET : AF_INET6),
    });
  }
  return out;
}

export interface FastPathConfig {
  redirectEnabled: boolean;
  /** Bytes a fast-path socket may hold unread before its writer is held
   * back (the TCP way). */
  queueLimit: number;
}

export function encodeConfig(c: FastPathConfig): Buffer {
  const b = Buffer.alloc(ConfigLayout.size);
  b.writeUInt32LE(c.redirectEnabled ? 1 : 0, ConfigLayout.fields.redirect_enabled.offset);
  b.writeUInt32LE(c.queueLimit, ConfigLayout.fields.queue_limit.offset);
  return b;
}

export function decodeConfig(b: Buffer): FastPathConfig {
  return {
    redirectEnabled: b.readUInt32LE(ConfigLayout.fields.redirect_enabled.offset) !== 0,
    queueLimit: b.readUInt32LE(ConfigLayout.fields.queue_limit.offset),
  };
}

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
  size: 32,
  fields: {
    cgroup_id: { offset: 0, size: 8 },
    cgroup_level: { offset: 8, size: 4 },
    proxy_port: { offset: 12, size: 4 },
    lo_ifindex: { offset: 16, size: 4 },
    intercept_mark: { offset: 20, size: 4 },
    proxy_mark: { offset: 24, size: 4 },
    rule_count: { offset: 28, size: 4 },
  },
} as const;

/** struct accel_tproxy_flow */
export const TproxyFlowLayout = {
  size: 8,
  fields: {
    proxy_port: { offset: 0, size: 4 },
    proxy_in_cgroup: { offset: 4, size: 4 },
  },
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
} as const;
export type TproxyCounterName = keyof typeof TPROXY_COUNTER_ENUM;
export const TPROXY_COUNTERS = Object.keys(TPROXY_COUNTER_ENUM) as TproxyCounterName[];
export type TproxyCounters = Record<TproxyCounterName, bigint>;

/** A rule in the form the BPF side matches: destination prefix and ports. */
export interface InterceptRule {
  /** Canonical text, e.g. 10.200.0.0/24:8080 or [fd00::/64]:8000-8100. */
  text: string;
  address: string;
  prefixLength: number;
  family: 'ipv4' | 'ipv6';
  portMin: number;
  portMax: number;
}

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
  };
}

/** struct accel_splice_sock */
export const SpliceSockLayout = {
  size: 16,
  fields: {
    bytes_redirected: { offset: 0, size: 8 },
    next_seq: { offset: 8, size: 4 },
    seq_known: { offset: 12, size: 4 },
  },
} as const;

/** enum accel_splice_counter, in order, with the C enumerator names. */
export const SPLICE_COUNTER_ENUM = {
  bytes_redirected: 'ACCEL_SPLICE_BYTES_REDIRECTED',
  skbs_redirected: 'ACCEL_SPLICE_SKBS_REDIRECTED',
  skbs_passed: 'ACCEL_SPLICE_SKBS_PASSED',
  pairs_spliced: 'ACCEL_SPLICE_PAIRS_SPLICED',
  pairs_closed: 'ACCEL_SPLICE_PAIRS_CLOSED',
  fins_dropped: 'ACCEL_SPLICE_FINS_DROPPED',
  bytes_repeated: 'ACCEL_SPLICE_BYTES_REPEATED',
  bytes_repeat_sent: 'ACCEL_SPLICE_BYTES_REPEAT_SENT',
  holds: 'ACCEL_SPLICE_HOLDS',
  releases: 'ACCEL_SPLICE_RELEASES',
} as const;
export type SpliceCounterName = keyof typeof SPLICE_COUNTER_ENUM;
export const SPLICE_COUNTERS = Object.keys(SPLICE_COUNTER_ENUM) as SpliceCounterName[];
export type SpliceCounters = Record<SpliceCounterName, bigint>;
