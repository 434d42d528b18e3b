/**
 * User-space mirror of the fast path's structs and counters in
 * bpf/include/accel.h (sockops.c, skmsg.c, stream_verdict.c,
 * iter_listeners.c). test/maps/layout.test.ts compares FASTPATH_BTF with
 * the BTF of layout.btf.o.
 */
import { AF_INET, AF_INET6, type BtfMirrors, ipFromBytes } from './shared.js';

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
  size: 16,
  fields: {
    redirect_enabled: { offset: 0, size: 4 },
    queue_limit: { offset: 4, size: 4 },
    cgroup_id: { offset: 8, size: 8 },
  },
} as const;

/** struct accel_member: value of accel_members. */
export const MemberLayout = {
  size: 24,
  fields: {
    sk: { offset: 0, size: 8 },
    cookie: { offset: 8, size: 8 },
    flags: { offset: 16, size: 4 },
    snd_base: { offset: 20, size: 4 },
  },
} as const;

/** struct accel_sock_state */
export const SockStateLayout = {
  size: 32,
  fields: {
    tcp_only: { offset: 0, size: 4 },
    // A union: listener on a listening socket, cut_size on a connected one.
    listener: { offset: 4, size: 4 },
    cut_size: { offset: 4, size: 4 },
    held: { offset: 8, size: 4 },
    flags: { offset: 12, size: 4 },
    to_proxy: { offset: 16, size: 8 },
    snd_base: { offset: 24, size: 4 },
    to_relay: { offset: 28, size: 4 },
  },
} as const;

/** struct accel_shortcut: value of accel_shortcuts (the sender's key). */
export const ShortcutLayout = {
  size: 112,
  fields: {
    dest: { offset: 0, size: 56 },
    dest_sock: { offset: 56, size: 24 },
    relay_sock: { offset: 80, size: 24 },
    sent: { offset: 104, size: 8 },
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
  'sockets_skipped_nested',
  'shortcut_directions',
  'shortcut_messages',
  'shortcut_bytes',
  'shortcut_bytes_detoured',
  'shortcut_resumed',
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
  sockets_skipped_nested: 'ACCEL_CNT_SOCK_SKIPPED_NESTED',
  shortcut_directions: 'ACCEL_CNT_SHORTCUT_DIRECTIONS',
  shortcut_messages: 'ACCEL_CNT_SHORTCUT_MSGS',
  shortcut_bytes: 'ACCEL_CNT_SHORTCUT_BYTES',
  shortcut_bytes_detoured: 'ACCEL_CNT_SHORTCUT_DETOURED',
  shortcut_resumed: 'ACCEL_CNT_SHORTCUT_RESUMED',
};

export const FASTPATH_BTF: BtfMirrors = {
  structs: {
    accel_listen_key: ListenKeyLayout,
    accel_config: ConfigLayout,
    accel_member: MemberLayout,
    accel_sock_state: SockStateLayout,
    accel_shortcut: ShortcutLayout,
    accel_listener_rec: ListenerRecLayout,
  },
  enums: {
    accel_counter: { enumerators: COUNTERS.map((c) => COUNTER_ENUM[c]), max: 'ACCEL_CNT_MAX' },
  },
};

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
  /** The attached cgroup (nested attachments: bpf/include/accel_owners.h). */
  cgroupId: bigint;
}

export function encodeConfig(c: FastPathConfig): Buffer {
  const b = Buffer.alloc(ConfigLayout.size);
  b.writeUInt32LE(c.redirectEnabled ? 1 : 0, ConfigLayout.fields.redirect_enabled.offset);
  b.writeUInt32LE(c.queueLimit, ConfigLayout.fields.queue_limit.offset);
  b.writeBigUInt64LE(c.cgroupId, ConfigLayout.fields.cgroup_id.offset);
  return b;
}

export function decodeConfig(b: Buffer): FastPathConfig {
  return {
    redirectEnabled: b.readUInt32LE(ConfigLayout.fields.redirect_enabled.offset) !== 0,
    queueLimit: b.readUInt32LE(ConfigLayout.fields.queue_limit.offset),
    cgroupId: b.readBigUInt64LE(ConfigLayout.fields.cgroup_id.offset),
  };
}

/** A shortcut as accel proxy writes it (struct accel_shortcut). */
export interface Shortcut {
  /** The destination's key in accel_sock_hash (its own view). */
  dest: Buffer;
  /** accel_members values (struct accel_member) of the destination and of
   * the proxy's socket towards it. */
  destSock: Buffer;
  relaySock: Buffer;
}

/** Bytes its sender sent by a shortcut (accel_shortcut.sent), from the
 * entry's value. */
export function shortcutSent(value: Buffer): bigint {
  return value.readBigUInt64LE(ShortcutLayout.fields.sent.offset);
}

/** An entry as the proxy writes it: nothing sent yet. */
export function encodeShortcut(s: Shortcut): Buffer {
  const f = ShortcutLayout.fields;
  const b = Buffer.alloc(ShortcutLayout.size);
  s.dest.copy(b, f.dest.offset, 0, f.dest.size);
  s.destSock.copy(b, f.dest_sock.offset, 0, f.dest_sock.size);
  s.relaySock.copy(b, f.relay_sock.offset, 0, f.relay_sock.size);
  return b;
}

/** The state accel proxy gives each of its two sockets of a shortcut
 * connection before it writes a byte into either: tcp_only, so what it
 * relays goes by TCP, where the kernel counts it (accel_shortcut.h). */
export function tcpOnlySockState(): Buffer {
  const b = Buffer.alloc(SockStateLayout.size);
  b.writeUInt32LE(1, SockStateLayout.fields.tcp_only.offset);
  return b;
}
