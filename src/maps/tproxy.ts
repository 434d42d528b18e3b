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
  decodeTproxyConfig,
  encodeInterceptRule,
  encodeTproxyConfig,
} from './layout/tproxy.js';
import { SockKeyLayout, type SockKey, decodeSockKey } from './layout/shared.js';

/** The interception's maps, pinned by name in the attachment's directory
 * beside the fast path's (bpf/include/accel_maps.h). */
export const TproxyMapNames = {
  config: 'accel_tproxy_config',
  rules: 'accel_tproxy_rules',
  flows: 'accel_tproxy_flows',
  counters: 'accel_tproxy_counters',
} as const;

/** ARRAY_OF_MAPS with one slot, made with the fast path's maps: the
 * interception's flow map goes in it so that sockops.c finds it. */
export const FLOWS_SLOT = 'accel_tproxy_flows_slot';
/** LRU of the flows whose application socket closed (sockops.c moves them
 * there), made with the fast path's maps too. */
export const CLOSED_FLOWS = 'accel_tproxy_closed';

export const RULES_MAX = 32;

/** Put the flow map `flowsFd` in the slot (sockops.c reads and deletes
 * flows through it). */
export function fillFlowsSlot(slotFd: number, flowsFd: number): void {
  update(slotFd, u32(0), u32(flowsFd));
}

/** Empty the slot: sockops.c sees no interception. */
export function emptyFlowsSlot(slotFd: number): void {
  remove(slotFd, u32(0));
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
  configure(config: Omit<TproxyConfig, 'ruleCount'>, rules: InterceptRule[]): void {
    if (rules.length > RULES_MAX) throw new RangeError(`at most ${RULES_MAX} intercept rules`);
    rules.forEach((r, i) => update(this.fds.rules, u32(i), encodeInterceptRule(r)));
    update(this.fds.config, u32(0), encodeTproxyConfig({ ...config, ruleCount: rules.length }));
  }

  /** Switch interception off (proxy port 0) before the programs go away. */
  disable(): void {
    const c = this.config();
    if (c) update(this.fds.config, u32(0), encodeTproxyConfig({ ...c, proxyPort: 0, ruleCount: 0 }));
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
