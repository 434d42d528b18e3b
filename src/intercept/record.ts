/**
 * The record of one interception: what it added to routing, tc and bpffs,
 * under /run/accel. Each addition is written here BEFORE it is made, so a
 * crash at any point leaves a record that covers everything on the host
 * (undoing an addition that was never made is a no-op), and removal touches
 * exactly what accel added: never the host's own rules, routes, qdiscs,
 * filters or another tool's tc programs.
 *
 * One writer: a record is written only by the attachment of its own
 * cgroup, under that cgroup's lock (attachment/journal.ts). Others read it
 * (to learn which shared host resources it needs) and never write it.
 */
import path from 'node:path';
import { z } from 'zod';
import { AccelError, ErrorCodes } from '../errors.js';
import type * as ip from '../net/iproute.js';
import { interceptRecordPath } from '../paths.js';
import { readState, removeState, stateKind, writeState } from '../state/store.js';
import type { InterceptBuild } from './build.js';
import type { HookRecord } from './hooks.js';
import type { InterceptSettings } from './settings.js';

export interface InterceptRecord {
  version: 2;
  cgroupId: string;
  cgroupPath: string;
  /** Inode of the network namespace the interception lives in. */
  netns: number;
  settings: InterceptSettings;
  /** Set once every step is done. */
  complete: boolean;
  /** The build of the interception's programs it runs (intercept/build.ts):
   * installed with it or upgraded in place. Absent in records written
   * before build ids: such an interception counts as another build. */
  build?: InterceptBuild;
  added: {
    /** The value accept_local had before (null: not changed). */
    acceptLocal: string | null;
    routes: ip.LocalRoute[];
    rules: ip.MarkRule[];
    /** tc or tcx hooks of the programs. */
    hooks: HookRecord[];
    pins: string[];
  };
}

const u32 = z.number().int().min(0).max(0xffffffff);
const family = z.union([z.literal(4), z.literal(6)]);
const direction = z.enum(['ingress', 'egress']);
const absolute = z.string().refine((p) => path.isAbsolute(p), 'not an absolute path');

const Settings = z.object({
  ifaces: z.array(z.string().min(1)),
  rules: z.array(
    z.object({
      text: z.string(),
      address: z.string(),
      prefixLength: z.number().int().min(0).max(128),
      family: z.enum(['ipv4', 'ipv6']),
      portMin: z.number().int().min(0).max(65535),
      portMax: z.number().int().min(0).max(65535),
    }),
  ),
  proxyPort: z.number().int().min(1).max(65535),
  interceptMark: u32,
  proxyMark: u32,
  table: u32,
  priority: u32,
  maxFlows: z.number().int().min(1),
  proxyPid: z.number().int().min(1).nullable(),
  // Records written before the option existed passed UDP.
  udp: z.enum(['pass', 'refuse']).default('pass'),
});

const Hook = z.discriminatedUnion('mode', [
  z.object({ mode: z.literal('tcx'), dev: z.string().min(1), ifindex: z.number().int().min(0), direction, linkPin: absolute }),
  z.object({
    mode: z.literal('tc'),
    dev: z.string().min(1),
    direction,
    priority: u32,
    clsactAdded: z.boolean(),
    progId: z.number().int().min(0).optional(),
    replacing: z.number().int().min(0).optional(),
  }),
  z.object({ mode: z.literal('cgroup'), cgroupPath: z.string().min(1), attach: z.literal('egress'), linkPin: absolute }),
  z.object({ mode: z.literal('netns'), attach: z.literal('sk_lookup'), linkPin: absolute }),
]);

const Record = z.object({
  version: z.literal(2),
  cgroupId: z.string().regex(/^\d+$/),
  cgroupPath: z.string(),
  netns: z.number().int().min(0),
  settings: Settings,
  complete: z.boolean(),
  build: z
    .object({
      buildId: z.string().regex(/^[0-9a-f]{16}$/),
      at: z.string(),
      how: z.enum(['installed', 'upgraded']),
      from: z.string().nullable(),
    })
    .optional(),
  added: z.object({
    // Written back to a sysctl as root: digits only.
    acceptLocal: z.string().regex(/^\d+$/).nullable(),
    routes: z.array(z.object({ family, table: u32 })),
    rules: z.array(z.object({ family, priority: u32, mark: u32, table: u32 })),
    hooks: z.array(Hook),
    pins: z.array(absolute),
  }),
});

export const InterceptRecordKind = stateKind<InterceptRecord>('interception record', Record);

export function readRecord(cgroupId: bigint): InterceptRecord | null {
  const file = interceptRecordPath(cgroupId);
  const r = readState(file, InterceptRecordKind);
  if (r && r.cgroupId !== String(cgroupId)) throw new AccelError(ErrorCodes.STATE, `the interception record ${file} speaks of cgroup ${r.cgroupId}, not ${cgroupId}`);
  return r;
}

/** Atomic: the record on disk is always a whole one. */
export function saveRecord(r: InterceptRecord): void {
  writeState(interceptRecordPath(BigInt(r.cgroupId)), InterceptRecordKind, r);
}

export function removeRecord(cgroupId: bigint): void {
  removeState(interceptRecordPath(cgroupId));
}

/**
 * What the record asks to unlink as root: only files directly in the
 * attachment's own pin directory. A record that names anything else (a
 * planted or corrupted record) is refused before anything is removed.
 */
export function ownPins(r: InterceptRecord, pinDir: string): string[] {
  const dir = path.resolve(pinDir);
  const files = [...r.added.pins, ...r.added.hooks.flatMap((h) => (h.mode === 'tcx' || h.mode === 'netns' ? [h.linkPin] : []))];
  for (const f of files) {
    const resolved = path.resolve(f);
    const name = path.basename(resolved);
    if (path.dirname(resolved) !== dir || resolved !== path.normalize(f) || name === '' || name.startsWith('.')) {
      throw new AccelError(
        ErrorCodes.STATE,
        `the interception record ${interceptRecordPath(BigInt(r.cgroupId))} names ${f}, which is not in its attachment's pin directory ${dir}: refusing to remove anything it names`,
      );
    }
  }
  return files;
}
