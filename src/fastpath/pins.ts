/**
 * The pin directory of one attachment: <bpffs>/accel/cgroup-<cgroup id>/,
 * holding every map by name (libbpf pins them there as the objects load),
 * the programs, and the cgroup link. The link is pinned last: its presence
 * marks a complete attachment.
 */
import fs from 'node:fs';
import path from 'node:path';
import { linkInfo, progInfo, withPinned, withPinnedMaps } from '../bpf/fd.js';
import { MapNames } from '../maps/fastpath.js';
import { PIN_SUBDIR } from '../paths.js';

export const PinNames = {
  link: 'link_sockops',
  progSockops: 'prog_sockops',
  progSkmsg: 'prog_skmsg',
  progStreamVerdict: 'prog_stream_verdict',
} as const;

export const REQUIRED_MAP_PINS = [MapNames.sockHash, MapNames.counters, MapNames.config, MapNames.bypass, MapNames.members, MapNames.listeners];

export function pinRoot(bpffs: string): string {
  return path.join(bpffs, PIN_SUBDIR);
}

export function pinDirFor(bpffs: string, cgroupId: bigint): string {
  return path.join(pinRoot(bpffs), `cgroup-${cgroupId}`);
}

/** Cgroup ids of every attachment directory under the pin root. */
export function listAttachmentIds(bpffs: string): bigint[] {
  const root = pinRoot(bpffs);
  if (!fs.existsSync(root)) return [];
  return fs
    .readdirSync(root)
    .map((name) => /^cgroup-(\d+)$/.exec(name)?.[1])
    .filter((id): id is string => id !== undefined)
    .map((id) => BigInt(id));
}

export type AttachmentState =
  | { kind: 'absent' }
  | { kind: 'partial'; reason: string }
  | { kind: 'complete'; linkId: number; progIds: Record<string, number>; withStreamVerdict: boolean };

export function inspectAttachment(dir: string, cgroupId: bigint): AttachmentState {
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
  return { kind: 'complete', linkId: link.id, progIds, withStreamVerdict: PinNames.progStreamVerdict in progIds };
}

const MAP_PIN_NAMES = Object.values(MapNames);

/** Run `fn` with the maps pinned in an attachment directory; `need(name)`
 * is a map's fd or an E_NOT_ATTACHED error. Every fd is closed afterwards. */
export function withMapFds<T>(dir: string, fn: (need: (name: string) => number) => T): T {
  return withPinnedMaps(dir, MAP_PIN_NAMES, fn);
}
