/**
 * What the per-component mirrors of bpf/include/accel.h share: how a
 * mirror is described (checked against the BTF of layout.btf.o by
 * test/maps/layout.test.ts), addresses in the 16-byte key form, and
 * struct accel_sock_key, the key of the fast path and of the interception.
 */
import net from 'node:net';

export interface FieldLayout {
  offset: number;
  size: number;
}

/** A C struct as user space reads and writes it. */
export interface StructLayout {
  size: number;
  fields: Record<string, FieldLayout>;
}

/** A C enum user space indexes by: its enumerators in order, and the one
 * that counts them. */
export interface EnumMirror {
  enumerators: readonly string[];
  max: string;
}

/** The mirrors of one component, by C name (struct accel_x, enum accel_y). */
export interface BtfMirrors {
  structs: Record<string, StructLayout>;
  enums: Record<string, EnumMirror>;
}

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

export const SHARED_BTF: BtfMirrors = {
  structs: { accel_sock_key: SockKeyLayout },
  enums: {},
};

export interface SockKey {
  netns: bigint;
  family: 'ipv4' | 'ipv6';
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
}

/** An address in the 16-byte key form, as text. */
export function ipFromBytes(b: Buffer, family: number): string {
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

/** A connected socket's two ends, as node reports them. */
export interface SocketEnds {
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
}

const unmapped = (a: string) => a.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, '$1');

/** The SOCKHASH key of a connected socket (node's IPv4-mapped addresses
 * read as IPv4, as the kernel keys an IPv4 socket): its own, or with
 * `peer` its peer's (the two ends swapped). */
export function sockKeyOf(netns: bigint, s: SocketEnds, peer = false): Buffer {
  const local = unmapped(s.localAddress);
  const remote = unmapped(s.remoteAddress);
  const [a, b] = peer
    ? [
        { address: remote, port: s.remotePort },
        { address: local, port: s.localPort },
      ]
    : [
        { address: local, port: s.localPort },
        { address: remote, port: s.remotePort },
      ];
  return encodeSockKey({ netns, family: local.includes(':') ? 'ipv6' : 'ipv4', localAddress: a.address, localPort: a.port, remoteAddress: b.address, remotePort: b.port });
}

/** The peer's key from a socket's own (the two ends swapped), without
 * parsing addresses again: a copy with ports and addresses exchanged. */
export function reversedSockKey(own: Buffer): Buffer {
  const f = SockKeyLayout.fields;
  const b = Buffer.from(own);
  b.writeUInt32LE(own.readUInt32LE(f.remote_port.offset), f.local_port.offset);
  b.writeUInt32LE(own.readUInt32LE(f.local_port.offset), f.remote_port.offset);
  own.copy(b, f.local_ip.offset, f.remote_ip.offset, f.remote_ip.offset + 16);
  own.copy(b, f.remote_ip.offset, f.local_ip.offset, f.local_ip.offset + 16);
  return b;
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
