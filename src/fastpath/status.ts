/** The fast path's part of `accel status`, read back from its pins and maps. */
import path from 'node:path';
import type { Counters } from '../maps/layout/fastpath.js';
import type { SockKey } from '../maps/layout/shared.js';
import { type FastPathObserved, PinNames, withMaps } from './pins.js';

export interface FastPathStatus {
  linkPin: string;
  linkId: number | null;
  programIds: Record<string, number>;
  withStreamVerdict: boolean;
  redirectEnabled: boolean;
  /** Bytes a socket may hold unread before its writer is held back. */
  queueLimit: number | null;
  /** Size of the SOCKHASH. */
  maxSockets: number | null;
  socketsInMap: number;
  members: number;
  listeners: number;
  bypassPorts: number[];
  counters: Counters | null;
}

export function fastPathStatus(dir: string, observed: FastPathObserved): FastPathStatus {
  const complete = observed.kind === 'complete' ? observed : null;
  let maps: Pick<FastPathStatus, 'socketsInMap' | 'members' | 'listeners' | 'bypassPorts' | 'counters' | 'redirectEnabled' | 'queueLimit'> = {
    socketsInMap: 0,
    members: 0,
    listeners: 0,
    bypassPorts: [],
    counters: null,
    redirectEnabled: false,
    queueLimit: null,
  };
  try {
    maps = withMaps(dir, (m) => {
      const config = m.config();
      return {
        socketsInMap: m.socketCount(),
        members: m.memberCount(),
        listeners: m.listenerCount(),
        bypassPorts: m.bypassPorts(),
        counters: m.counters(),
        redirectEnabled: config.redirectEnabled,
        queueLimit: config.queueLimit,
      };
    });
  } catch {
    /* a partial fast path may lack maps */
  }
  return {
    linkPin: path.join(dir, PinNames.link),
    linkId: complete?.linkId ?? null,
    programIds: complete?.progIds ?? {},
    withStreamVerdict: complete?.withStreamVerdict ?? false,
    maxSockets: complete?.maxSockets ?? null,
    ...maps,
  };
}

const keyText = (k: SockKey) =>
  k.family === 'ipv4' ? `${k.localAddress}:${k.localPort} -> ${k.remoteAddress}:${k.remotePort}` : `[${k.localAddress}]:${k.localPort} -> [${k.remoteAddress}]:${k.remotePort}`;

/** Connections whose two sockets are both in the map, each once. */
export function engagedConnections(keys: SockKey[]): string[] {
  const id = (k: SockKey, reversed: boolean) =>
    reversed ? `${k.netns}|${k.remoteAddress}|${k.remotePort}|${k.localAddress}|${k.localPort}` : `${k.netns}|${k.localAddress}|${k.localPort}|${k.remoteAddress}|${k.remotePort}`;
  const present = new Set(keys.map((k) => id(k, false)));
  return keys.filter((k) => present.has(id(k, true)) && id(k, false) < id(k, true)).map((k) => keyText(k).replace(' -> ', ' <-> '));
}
