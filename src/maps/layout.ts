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
    pad: { offset: 12, size: 4 },
    ip: { offset: 16, size: 16 },
  },
} as const;

/** struct accel_config */
export const ConfigLayout = {
  size: 8,
  fields: {
    redirect_enabled: { offset: 0, size: 4 },
    pad: { offset: 4, size: 4 },
  },
} as const;

/** struct accel_sock_state */
export const SockStateLayout = {
  size: 8,
  fields: {
    tcp_only: { offset: 0, size: 4 },
    pad: { offset: 4, size: 4 },
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

function ipToBytes(address: string): Buffer {
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

export interface FastPathConfig {
  redirectEnabled: boolean;
}

export function encodeConfig(c: FastPathConfig): Buffer {
  const b = Buffer.alloc(ConfigLayout.size);
  b.writeUInt32LE(c.redirectEnabled ? 1 : 0, ConfigLayout.fields.redirect_enabled.offset);
  return b;
}

export function decodeConfig(b: Buffer): FastPathConfig {
  return {
    redirectEnabled: b.readUInt32LE(ConfigLayout.fields.redirect_enabled.offset) !== 0,
  };
}
