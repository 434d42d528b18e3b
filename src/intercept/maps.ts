/** Interception's pinned maps (tc_tproxy.c), opened together; which of them
 * an interception makes; and the fast path's slots through which sockops.c
 * finds them. */
import fs from 'node:fs';
import path from 'node:path';
import { withPinnedMaps } from '../bpf/fd.js';
import { SlotNames, TproxyMapNames, TproxyMaps, disableTproxyConfig, emptySlot, fillSlot } from '../maps/tproxy.js';

const TPROXY_MAP_PINS = [TproxyMapNames.config, TproxyMapNames.rules, TproxyMapNames.flows, TproxyMapNames.counters];

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

const pinned = (pinDir: string, name: string) => fs.existsSync(path.join(pinDir, name));

/**
 * The maps an interception makes (and its undo removes) in the attachment's
 * directory: all of its own, on a fast path that reaches them through
 * slots. A fast path made before they moved out of it (no closed slot) made
 * all but the flows itself and its sockops program uses them directly:
 * there the interception joins them and makes only its flows, as then.
 */
export function interceptOwnMaps(pinDir: string): string[] {
  if (!pinned(pinDir, SlotNames.closed)) return [TproxyMapNames.flows, TproxyMapNames.tw];
  return [TproxyMapNames.flows, TproxyMapNames.config, TproxyMapNames.rules, TproxyMapNames.closed, TproxyMapNames.counters, TproxyMapNames.tw];
}

/** In the order the slots are filled: the flows last, as a flow map in
 * its slot is what tells sockops.c that there is an interception (and so
 * emptied first). */
const SLOTS = [
  [SlotNames.closed, TproxyMapNames.closed],
  [SlotNames.counters, TproxyMapNames.counters],
  [SlotNames.flows, TproxyMapNames.flows],
] as const;

/** Put the interception's maps (name -> fd) in the fast path's slots that
 * are pinned in `pinDir` (an attachment of an earlier build has only the
 * flows slot). */
export function fillSlots(pinDir: string, mapFd: (name: string) => number): void {
  const slots = SLOTS.filter(([slot]) => pinned(pinDir, slot));
  withPinnedMaps(
    pinDir,
    slots.map(([slot]) => slot),
    (need) => slots.forEach(([slot, inner]) => fillSlot(need(slot), mapFd(inner))),
  );
}

/** sockops.c stops looking for flows (the fast path may stay). */
export function emptySlots(pinDir: string): void {
  const slots = [...SLOTS].reverse().filter(([slot]) => pinned(pinDir, slot));
  withPinnedMaps(
    pinDir,
    slots.map(([slot]) => slot),
    (need) => slots.forEach(([slot]) => emptySlot(need(slot))),
  );
}

/** Switch interception off (proxy port 0) before its programs go away, if
 * its settings are pinned. */
export function disableIntercept(pinDir: string): void {
  if (!pinned(pinDir, TproxyMapNames.config)) return;
  withPinnedMaps(pinDir, [TproxyMapNames.config], (need) => disableTproxyConfig(need(TproxyMapNames.config)));
}
