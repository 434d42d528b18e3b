/**
 * Typed views of the interception maps (tc_tproxy.c): settings, rules,
 * steered flows and counters.
 */
import { keys, lookup, lookupPercpuSum, remove, update, u32 } from '../bpf/map.js';
import {
  type InterceptRule,
  TPROXY_COUNTERS,
  type TproxyConfig,
  TproxyConfigLayout,
  type TproxyCounters,
  TP_F_SK_LOOKUP,
  decodeTproxyConfig,
  encodeInterceptRule,
  encodeTproxyConfig,
} from './layout/tproxy.js';
import { SockKeyLayout, type SockKey, decodeSockKey } from './layout/shared.js';

/** The interception's maps, pinned by name in the attachment's directory
 * beside the fast path's (bpf/include/accel_intercept_maps.h): made when
 * an interception is installed (tc_tproxy.bpf.o makes them), removed with
 * it. An attachment made before they moved (no closed slot pinned) has
 * all but the flows made and kept with its fast path instead. */
export const TproxyMapNames = {
  config: 'accel_tproxy_config',
  rules: 'accel_tproxy_rules',
  flows: 'accel_tproxy_flows',
  closed: 'accel_tproxy_closed',
  counters: 'accel_tproxy_counters',
  /** SYNs retiring a proxy-side TIME_WAIT socket (sk_lookup.c). */
  tw: 'accel_tproxy_tw',
} as const;

/** ARRAY_OF_MAPS with one slot each, made with the fast path's maps
 * (bpf/include/accel_intercept_flows.h) and empty without an interception:
 * its flows, its closed flows and its counters go in them so that
 * sockops.c finds them. The closed and counters slots came with the move
 * of those maps out of the fast path: an attachment made before has only
 * the flows slot. */
export const SlotNames = {
  flows: 'accel_tproxy_flows_slot',
  closed: 'accel_tproxy_closed_slot',
  counters: 'accel_tproxy_counters_slot',
} as const;
export const FLOWS_SLOT = SlotNames.flows;

export const RULES_MAX = 32;

/** Put the map `innerFd` in the slot `slotFd`. */
export function fillSlot(slotFd: number, innerFd: number): void {
  update(slotFd, u32(0), u32(innerFd));
}

/** Empty the slot: sockops.c no longer reaches its map. */
export function emptySlot(slotFd: number): void {
  remove(slotFd, u32(0));
}

/** Proxy port 0, no rule and no flag in the settings map `configFd`: the
 * programs steer nothing, and leave no SYN to sk_lookup.c. */
export function disableTproxyConfig(configFd: number): void {
  const b = lookup(configFd, u32(0), TproxyConfigLayout.size);
  if (b) update(configFd, u32(0), encodeTproxyConfig({ ...decodeTproxyConfig(b), proxyPort: 0, ruleCount: 0, flags: 0 }));
}

export interface TproxyFds {
  config: number;
  rules: number;
  flows: number;
  counters: number;
}

export class TproxyMaps {
  constructor(readonly fds: TproxyFds) {}

  config(): TproxyConfig | null {
    const b = lookup(this.fds.config, u32(0), TproxyConfigLayout.size);
    return b ? decodeTproxyConfig(b) : null;
  }

  /** Rules first, then the settings that make them count: the programs
   * never see a rule_count beyond the rules written. */
  configure(config: Omit<TproxyConfig, 'ruleCount' | 'flags'>, rules: InterceptRule[]): void {
    if (rules.length > RULES_MAX) throw new RangeError(`at most ${RULES_MAX} intercept rules`);
    rules.forEach((r, i) => update(this.fds.rules, u32(i), encodeInterceptRule(r)));
    // The flags stay as they are: they say what is attached, not settings.
    const flags = this.config()?.flags ?? 0;
    update(this.fds.config, u32(0), encodeTproxyConfig({ ...config, ruleCount: rules.length, flags }));
  }

  /** Say whether sk_lookup.c is attached (TP_F_SK_LOOKUP): set only once
   * its link is, cleared before it goes. */
  setSkLookup(on: boolean): void {
    const c = this.config();
    if (!c) return;
    update(this.fds.config, u32(0), encodeTproxyConfig({ ...c, flags: on ? c.flags | TP_F_SK_LOOKUP : c.flags & ~TP_F_SK_LOOKUP }));
  }

  /** Switch interception off (proxy port 0) before the programs go away. */
  disable(): void {
    disableTproxyConfig(this.fds.config);
  }

  counters(): TproxyCounters {
    const out = {} as TproxyCounters;
    TPROXY_COUNTERS.forEach((name, i) => {
      out[name] = lookupPercpuSum(this.fds.counters, i);
    });
    return out;
  }

  flows(limit?: number): SockKey[] {
    return keys(this.fds.flows, SockKeyLayout.size, limit).map(decodeSockKey);
  }
}
