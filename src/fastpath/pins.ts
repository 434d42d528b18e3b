/**
 * What the fast path pins in an attachment's directory, and what those pins
 * say about it: every map by name (libbpf pins them there as the objects
 * load), the programs, and the cgroup link. The
 * link is pinned last: its presence marks a complete fast path.
 */
import fs from 'node:fs';
import path from 'node:path';
import { linkInfo, mapInfo, progInfo, withPinned, withPinnedMaps } from '../bpf/fd.js';
import { FastPathMaps, MapNames } from '../maps/fastpath.js';
import { CLOSED_FLOWS, FLOWS_SLOT } from '../maps/tproxy.js';

export const PinNames = {
  link: 'link_sockops',
  progSockops: 'prog_sockops',
  progSkmsg: 'prog_skmsg',
  progStreamVerdict: 'prog_stream_verdict',
} as const;

/** Without one of these, the fast path was made by another version of
 * accel (the flow slot and the closed flows came with flows that end with
 * their connections, the shortcuts with accel proxy's shortcut), and the next attach makes it anew. */
export const REQUIRED_MAP_PINS = [
  MapNames.sockHash,
  MapNames.counters,
  MapNames.config,
  MapNames.bypass,
  MapNames.members,
  MapNames.listeners,
  MapNames.shortcuts,
  FLOWS_SLOT,
  CLOSED_FLOWS,
];

/** The settings a complete fast path runs with, read back from the kernel. */
export interface FastPathObservedSettings {
  withStreamVerdict: boolean;
  bypassPorts: number[];
  queueLimit: number;
  maxSockets: number;
}

export type FastPathObserved =
  { kind: 'absent' } | { kind: 'partial'; reason: string } | ({ kind: 'complete'; linkId: number; progIds: Record<string, number> } & FastPathObservedSettings);

export function observeFastPath(dir: string, cgroupId: bigint): FastPathObserved {
  if (!fs.existsSync(dir)) return { kind: 'absent' };
  const link = withPinned(path.join(dir, PinNames.link), (fd) => linkInfo(fd));
  if (!link) return { kind: 'partial', reason: 'no cgroup link pinned (interrupted attach or detach)' };
  if (link.cgroupId !== cgroupId) return { kind: 'partial', reason: `link points at cgroup ${link.cgroupId}, not ${cgroupId}` };
  const missing = REQUIRED_MAP_PINS.filter((name) => !fs.existsSync(path.join(dir, name)));
  if (missing.length) return { kind: 'partial', reason: `missing map pins: ${missing.join(', ')}` };
  const progIds: Record<string, number> = {};
  for (const name of [PinNames.progSockops, PinNames.progSkmsg, PinNames.progStreamVerdict]) {
    const id = withPinned(path.join(dir, name), (fd) => progInfo(fd).id);
    if (id !== null) progIds[name] = id;
  }
  const settings = withMaps(dir, (m) => ({ bypassPorts: m.bypassPorts(), queueLimit: m.config().queueLimit, maxSockets: mapInfo(m.fds.sockHash).maxEntries }));
  return { kind: 'complete', linkId: link.id, progIds, withStreamVerdict: PinNames.progStreamVerdict in progIds, ...settings };
}

const MAP_PIN_NAMES = Object.values(MapNames);

/** Run `fn` with typed views of the fast path's maps pinned in `dir`; a
 * missing map is an E_NOT_ATTACHED error. Every fd is closed afterwards. */
export function withMaps<T>(dir: string, fn: (maps: FastPathMaps) => T): T {
  return withPinnedMaps(dir, MAP_PIN_NAMES, (need) =>
    fn(
      new FastPathMaps({
        sockHash: need(MapNames.sockHash),
        counters: need(MapNames.counters),
        config: need(MapNames.config),
        bypass: need(MapNames.bypass),
        members: need(MapNames.members),
        listeners: need(MapNames.listeners),
        shortcuts: need(MapNames.shortcuts),
      }),
    ),
  );
}
