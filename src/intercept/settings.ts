/** What an interception is asked to do, and its defaults. */
import type { InterceptRule } from '../maps/layout/tproxy.js';
import type { IpFamily } from '../net/iproute.js';

export const INTERCEPT_DEFAULTS = {
  interceptMark: 0x0acc0001,
  proxyMark: 0x0acc0002,
  table: 2764,
  priority: 2764,
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
}

export function sameSettings(a: InterceptSettings, b: InterceptSettings): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Whether `to` differs from `from` only in what the tc programs read from
 * their maps (rules, proxy port, proxy mark): then it changes in place,
 * without touching hooks, ip rules or routes, and live intercepted
 * connections keep their flows. */
export function changesInPlace(from: InterceptSettings, to: InterceptSettings): boolean {
  const sorted = (xs: string[]) => JSON.stringify([...xs].sort());
  return (
    sorted(from.ifaces) === sorted(to.ifaces) &&
    from.table === to.table &&
    from.priority === to.priority &&
    from.interceptMark === to.interceptMark &&
    JSON.stringify(familiesOf(from.rules)) === JSON.stringify(familiesOf(to.rules))
  );
}

export function familiesOf(rules: InterceptRule[]): IpFamily[] {
  const out: IpFamily[] = [];
  if (rules.some((r) => r.family === 'ipv4')) out.push(4);
  if (rules.some((r) => r.family === 'ipv6')) out.push(6);
  return out;
}
