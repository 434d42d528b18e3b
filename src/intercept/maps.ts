/** Interception's pinned maps (tc_tproxy.c), opened together, and the
 * flows slot through which sockops.c finds them. */
import fs from 'node:fs';
import path from 'node:path';
import { withPinnedMaps } from '../bpf/fd.js';
import { FLOWS_SLOT, TproxyMapNames, TproxyMaps, emptyFlowsSlot } from '../maps/tproxy.js';

const TPROXY_MAP_PINS = Object.values(TproxyMapNames);

export function withTproxyMaps<T>(dir: string, fn: (maps: TproxyMaps) => T): T {
  return withPinnedMaps(dir, TPROXY_MAP_PINS, (need) =>
    fn(
      new TproxyMaps({
        config: need(TproxyMapNames.config),
        rules: need(TproxyMapNames.rules),
        flows: need(TproxyMapNames.flows),
        counters: need(TproxyMapNames.counters),
      }),
    ),
  );
}

/** sockops.c stops looking for flows (the fast path may stay). */
export function emptySlot(pinDir: string): void {
  if (fs.existsSync(path.join(pinDir, FLOWS_SLOT))) withPinnedMaps(pinDir, [FLOWS_SLOT], (need) => emptyFlowsSlot(need(FLOWS_SLOT)));
}
