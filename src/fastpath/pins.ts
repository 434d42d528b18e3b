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
import { FLOWS_SLOT } from '../maps/tproxy.js';
import { readBuildRecord } from './build.js';

export const PinNames = {
  link: 'link_sockops',
  progSockops: 'prog_sockops',
  progSkmsg: 'prog_skmsg',
  progStreamVerdict: 'prog_stream_verdict',
} as const;

/** Without one of these, the fast path was made by another version of
 * accel (the flow slot came with flows that end with their connections),
 * and the next attach makes it anew. No map of the interception's: those
 * are made with an interception (src/intercept/maps.ts). The closed and
 * counters slots are not required either: a fast path made before the
 * interception's maps moved out of it has its own instead, and its
 * interception joins them (interceptOwnMaps). Nor the shortcuts
 * (accel_shortcuts): a fast path of a build before them is complete and
 * is upgraded, not made anew (an upgrade's load creates and pins a map
 * the new build adds, see upgrade.ts). */
export const REQUIRED_MAP_PINS = [MapNames.sockHash, MapNames.counters, MapNames.config, MapNames.bypass, MapNames.members, MapNames.listeners, FLOWS_SLOT];

/** The settings a complete fast path runs with, read back from the kernel. */
export interface FastPathObservedSettings {
  withStreamVerdict: boolean;
  bypassPorts: number[];
  queueLimit: number;
  maxSockets: number;
}

export type FastPathObserved =
  | { kind: 'absent' }
  | { kind: 'partial'; reason: string }
  | ({ kind: 'complete'; linkId: number; progIds: Record<string, number>; buildId: string | null } & FastPathObservedSettings);

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
  // The build of its programs, as recorded (null: none recorded).
  const buildId = readBuildRecord(cgroupId)?.buildId ?? null;
  return { kind: 'complete', linkId: link.id, progIds, buildId, withStreamVerdict: PinNames.progStreamVerdict in progIds, ...settings };
}

const MAP_PIN_NAMES = Object.values(MapNames);

/** Run `fn` with typed views of the fast path's maps pinned in `dir`; a
 * missing map is an E_NOT_ATTACHED error. Every fd is closed afterwards. */
export function withMaps<T>(dir: string, fn: (maps: FastPathMaps) => T): T {
  return withPinnedMaps(dir, MAP_PIN_NAMES, (need, have) =>
    fn(
      new FastPathMaps({
        sockHash: need(MapNames.sockHash),
        counters: need(MapNames.counters),
        config: need(MapNames.config),
        bypass: need(MapNames.bypass),
        members: need(MapNames.members),
        listeners: need(MapNames.listeners),
        shortcuts: have(MapNames.shortcuts),
      }),
    ),
  );
}
