/** What an interception is asked to do, and its defaults. */
import type { InterceptRule } from '../maps/layout/tproxy.js';
import type { IpFamily } from '../net/iproute.js';

export const INTERCEPT_DEFAULTS = {
  interceptMark: 0x0acc0001,
  proxyMark: 0x0acc0002,
  table: 2764,
  priority: 2764,
  /** Flows steered at once (the size of accel_tproxy_flows, ACCEL_FLOWS_MAX
   * in bpf/include/accel.h). */
  maxFlows: 16384,
  udp: 'pass',
} as const;

export interface InterceptSettings {
  ifaces: string[];
  rules: InterceptRule[];
  proxyPort: number;
  interceptMark: number;
  proxyMark: number;
  table: number;
  /** Priority of the ip rule, and of the tc filters where tcx is missing. */
  priority: number;
  /** Connections steered at once: the size of the flow map, made when the
   * interception is installed. A SYN that finds it full is refused. */
  maxFlows: number;
  /** A transparent proxy that is not accel's (HAProxy, Envoy): its pid,
   * whose listening sockets on proxyPort accel registers (accel proxy
   * registers its own). Null for accel proxy. */
  proxyPid: number | null;
  /** UDP of the cgroup to covered destinations: 'refuse' (sendmsg fails
   * with EPERM; browsers fall back from QUIC to TCP) or 'pass' (not
   * policed). Changes in place. */
  udp: 'pass' | 'refuse';
}

export function sameSettings(a: InterceptSettings, b: InterceptSettings): boolean {
  return canonical(a) === canonical(b);
}

/** JSON with every object's keys sorted: the settings read back from a
 * record list a rule's fields in the schema's order, the parsed spec in
 * the parser's; the same settings either way. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0))) : v,
  );
}

/** Whether `to` differs from `from` only in what the tc programs read from
 * their maps (rules, proxy port, proxy mark): then it changes in place,
 * without touching hooks, ip rules or routes, and live intercepted
 * connections keep their flows. A new --max-flows is not in place: the
 * flow map's size is fixed when it is made, so the interception is made
 * anew (and live intercepted connections lose their flows). */
export function changesInPlace(from: InterceptSettings, to: InterceptSettings): boolean {
  const sorted = (xs: string[]) => JSON.stringify([...xs].sort());
  return (
    sorted(from.ifaces) === sorted(to.ifaces) &&
    from.table === to.table &&
    from.priority === to.priority &&
    from.interceptMark === to.interceptMark &&
    from.maxFlows === to.maxFlows &&
    from.proxyPid === to.proxyPid &&
    JSON.stringify(familiesOf(from.rules)) === JSON.stringify(familiesOf(to.rules))
  );
}

export function familiesOf(rules: InterceptRule[]): IpFamily[] {
  const out: IpFamily[] = [];
  if (rules.some((r) => r.family === 'ipv4')) out.push(4);
  if (rules.some((r) => r.family === 'ipv6')) out.push(6);
  return out;
}
