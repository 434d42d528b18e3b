/** What is attached where, read back from bpffs and the maps. */
import path from 'node:path';
import { findCgroupById, resolveCgroup } from '../cgroup/cgroup.js';
import type { Counters } from '../maps/layout/fastpath.js';
import type { SockKey } from '../maps/layout/shared.js';
import { type InterceptStatus, interceptStatus } from '../intercept/attachment.js';
import { withMaps } from './attachment.js';
import { PinNames, inspectAttachment, listAttachmentIds, pinDirFor } from './pins.js';

export interface AttachmentStatus {
  cgroupId: bigint;
  /** null when the cgroup no longer exists. */
  cgroupPath: string | null;
  pinDir: string;
  state: 'complete' | 'partial';
  reason: string | null;
  linkPin: string;
  linkId: number | null;
  programIds: Record<string, number>;
  withStreamVerdict: boolean;
  redirectEnabled: boolean;
  /** Bytes a socket may hold unread before its writer is held back. */
  queueLimit: number | null;
  socketsInMap: number;
  members: number;
  listeners: number;
  bypassPorts: number[];
  counters: Counters | null;
  /** Transparent interception of this cgroup, if any. */
  intercept: InterceptStatus | null;
}

export async function attachmentStatus(bpffs: string, cgroupId: bigint): Promise<AttachmentStatus | null> {
  const dir = pinDirFor(bpffs, cgroupId);
  const state = inspectAttachment(dir, cgroupId);
  if (state.kind === 'absent') return null;
  let maps: Pick<AttachmentStatus, 'socketsInMap' | 'members' | 'listeners' | 'bypassPorts' | 'counters' | 'redirectEnabled' | 'queueLimit'> = {
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
    /* a partial attachment may lack maps */
  }
  return {
    cgroupId,
    cgroupPath: findCgroupById(cgroupId),
    pinDir: dir,
    state: state.kind,
    reason: state.kind === 'partial' ? state.reason : null,
    linkPin: path.join(dir, PinNames.link),
    linkId: state.kind === 'complete' ? state.linkId : null,
    programIds: state.kind === 'complete' ? state.progIds : {},
    withStreamVerdict: state.kind === 'complete' && state.withStreamVerdict,
    ...maps,
    intercept: await interceptStatus(cgroupId, dir),
  };
}

/** Status of one cgroup's attachment, or of every attachment. */
export async function collectStatus(bpffs: string, cgroup?: string): Promise<AttachmentStatus[]> {
  const ids = cgroup ? [resolveCgroup(cgroup).id] : listAttachmentIds(bpffs);
  const out: AttachmentStatus[] = [];
  for (const id of ids) {
    const s = await attachmentStatus(bpffs, id);
    if (s) out.push(s);
  }
  return out;
}

const keyText = (k: SockKey) =>
  k.family === 'ipv4' ? `${k.localAddress}:${k.localPort} -> ${k.remoteAddress}:${k.remotePort}` : `[${k.localAddress}]:${k.localPort} -> [${k.remoteAddress}]:${k.remotePort}`;

/** Connections whose two sockets are both in the map, each once. */
export function engagedConnections(keys: SockKey[]): string[] {
  const id = (k: SockKey, reversed: boolean) =>
    reversed
      ? `${k.netns}|${k.remoteAddress}|${k.remotePort}|${k.localAddress}|${k.localPort}`
      : `${k.netns}|${k.localAddress}|${k.localPort}|${k.remoteAddress}|${k.remotePort}`;
  const present = new Set(keys.map((k) => id(k, false)));
  return keys.filter((k) => present.has(id(k, true)) && id(k, false) < id(k, true)).map((k) => keyText(k).replace(' -> ', ' <-> '));
}
