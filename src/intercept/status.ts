/** Interception's part of `accel status`. */
import fs from 'node:fs';
import path from 'node:path';
import type { TproxyCounters } from '../maps/layout/tproxy.js';
import { TproxyMapNames } from '../maps/tproxy.js';
import type { InterceptBuild } from './build.js';
import { hookPresent } from './hooks.js';
import { registeredProxyFamilies } from './check.js';
import { withTproxyMaps } from './maps.js';
import type { InterceptObserved } from './remove.js';
import type { Family } from '../sys/socket.js';
import type { InterceptSettings } from './settings.js';

export interface InterceptStatus {
  settings: InterceptSettings;
  complete: boolean;
  netns: number;
  inThisNetns: boolean;
  /** 'tcx' links or 'tc' filters. */
  hookMode: string;
  /** Cgroup programs of the interception (the egress guard). */
  cgroupHooks: number;
  /** Whether every hook is in place (null: not visible from this namespace). */
  filtersPresent: boolean | null;
  counters: TproxyCounters | null;
  flows: number | null;
  /** Families with an accel proxy listener registered for the proxy port
   * in this network namespace (null: not visible from here). */
  proxyRegistered: Family[] | null;
  /** The build of its programs, installed with it or upgraded in place
   * (null: recorded before build ids). */
  build: InterceptBuild | null;
}

export async function interceptStatus(observed: InterceptObserved, bpffs: string, pinDir: string): Promise<InterceptStatus | null> {
  if (observed.kind === 'absent') return null;
  const { record } = observed;
  const here = observed.kind === 'complete' || observed.kind === 'partial';
  let filtersPresent: boolean | null = null;
  if (here) {
    filtersPresent = true;
    for (const h of record.added.hooks) if (!(await hookPresent(h))) filtersPresent = false;
  }
  const pinned = fs.existsSync(path.join(pinDir, TproxyMapNames.counters));
  const maps = pinned ? withTproxyMaps(pinDir, (m) => ({ counters: m.counters(), flows: m.flows().length })) : { counters: null, flows: null };
  return {
    settings: record.settings,
    complete: record.complete,
    netns: record.netns,
    inThisNetns: here,
    hookMode: [...new Set(record.added.hooks.flatMap((h) => (h.mode === 'cgroup' || h.mode === 'netns' ? [] : [h.mode])))].join('+') || '-',
    cgroupHooks: record.added.hooks.filter((h) => h.mode === 'cgroup').length,
    filtersPresent,
    ...maps,
    proxyRegistered: here ? registeredProxyFamilies(bpffs, record.settings.proxyPort) : null,
    build: record.build ?? null,
  };
}
