/**
 * Typed views of the fast-path maps, opened by fd (from pins or from a
 * freshly loaded object).
 */
import { keys, lookup, lookupPercpuSum, update, remove, u32 } from '../bpf/map.js';
import { COUNTERS, type Counters, ConfigLayout, type FastPathConfig, ListenKeyLayout, decodeConfig, encodeConfig } from './layout/fastpath.js';
import { SockKeyLayout, type SockKey, decodeSockKey } from './layout/shared.js';

export const MapNames = {
  sockHash: 'accel_sock_hash',
  counters: 'accel_counters',
  config: 'accel_config',
  bypass: 'accel_bypass',
  sockState: 'accel_sk_state',
  members: 'accel_members',
  listeners: 'accel_listeners',
  shortcuts: 'accel_shortcuts',
  upstreams: 'accel_upstreams',
} as const;

export interface FastPathFds {
  sockHash: number;
  counters: number;
  config: number;
  bypass: number;
  members: number;
  listeners: number;
  /** null: pinned by a build before the shortcut (see pins.ts). */
  shortcuts: number | null;
}

const ZERO_KEY = Buffer.alloc(4);

export class FastPathMaps {
  constructor(readonly fds: FastPathFds) {}

  /** Keys of the sockets currently in the SOCKHASH. */
  sockets(limit?: number): SockKey[] {
    return keys(this.fds.sockHash, SockKeyLayout.size, limit).map(decodeSockKey);
  }

  socketCount(): number {
    return keys(this.fds.sockHash, SockKeyLayout.size).length;
  }

  memberCount(): number {
    return keys(this.fds.members, SockKeyLayout.size).length;
  }

  /** Shortcuts accel proxy has made (accel_shortcuts), one per direction. */
  shortcutCount(): number {
    return this.fds.shortcuts === null ? 0 : keys(this.fds.shortcuts, SockKeyLayout.size).length;
  }

  listenerCount(): number {
    return keys(this.fds.listeners, ListenKeyLayout.size).length;
  }

  /** The listening sockets recorded on `port`, summed over its addresses
   * and families (SO_REUSEPORT groups count each socket). */
  listenersOn(port: number): number {
    let n = 0;
    for (const k of keys(this.fds.listeners, ListenKeyLayout.size)) {
      if (k.readUInt32LE(ListenKeyLayout.fields.port.offset) !== port) continue;
      n += lookup(this.fds.listeners, k, 4)?.readUInt32LE(0) ?? 0;
    }
    return n;
  }

  counters(): Counters {
    const out = {} as Counters;
    COUNTERS.forEach((name, i) => {
      out[name] = lookupPercpuSum(this.fds.counters, i);
    });
    return out;
  }

  config(): FastPathConfig {
    const b = lookup(this.fds.config, ZERO_KEY, ConfigLayout.size);
    return b ? decodeConfig(b) : { redirectEnabled: false, queueLimit: 0, cgroupId: 0n };
  }

  setConfig(c: FastPathConfig): void {
    update(this.fds.config, ZERO_KEY, encodeConfig(c));
  }

  bypassPorts(): number[] {
    return keys(this.fds.bypass, 4)
      .map((k) => k.readUInt32LE(0))
      .sort((a, b) => a - b);
  }

  /** Make the bypass set exactly `ports`. */
  setBypassPorts(ports: number[]): void {
    const wanted = new Set(ports);
    for (const port of this.bypassPorts()) {
      if (!wanted.has(port)) remove(this.fds.bypass, u32(port));
    }
    for (const port of wanted) update(this.fds.bypass, u32(port), u32(1));
  }
}
