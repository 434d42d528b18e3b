/**
 * Host resources that the interceptions of one network namespace share:
 * the mark rule and the local route of their table (per family), and
 * accept_local on lo. Two interceptions with the same mark, table and
 * priority use one rule and one route.
 *
 * Each interception's record has one writer, its own attachment. A record
 * lists the shared resources of accel that its interception uses: the ones
 * it added, and the ones it found that another interception of accel
 * lists (a rule or route that was there before any of them is the host's,
 * and is never listed or removed). A resource is added if absent, and
 * removed when the last interception in the namespace that lists it goes:
 * found by reading every other record of that namespace, never by writing
 * into them. Both happen under the node's pin-root lock, and only
 * there does any record's list of shared resources change, so what one
 * reads of another's list is current.
 */
import { log } from '../log.js';
import { underPinRootLockAsync } from '../maps/proxy-listeners.js';
import * as ip from '../net/iproute.js';
import { listInterceptRecordIds } from '../paths.js';
import { type InterceptRecord, readRecord, saveRecord } from './record.js';
import { familiesOf } from './settings.js';

const ACCEPT_LOCAL = 'net.ipv4.conf.lo.accept_local';

interface Neighbours {
  records: InterceptRecord[];
  /** Records that could not be read: what they need is unknown. */
  unreadable: string[];
}

/** The other interceptions recorded in the same network namespace. */
function neighbours(record: InterceptRecord): Neighbours {
  const out: Neighbours = { records: [], unreadable: [] };
  for (const id of listInterceptRecordIds()) {
    if (String(id) === record.cgroupId) continue;
    try {
      const r = readRecord(id);
      if (r && r.netns === record.netns) out.records.push(r);
    } catch (err) {
      out.unreadable.push((err as Error).message);
    }
  }
  return out;
}

const sameRule = (a: ip.MarkRule, b: ip.MarkRule) => a.family === b.family && a.priority === b.priority && a.mark === b.mark && a.table === b.table;
const sameRoute = (a: ip.LocalRoute, b: ip.LocalRoute) => a.family === b.family && a.table === b.table;

/** The rule and route each family of an interception's settings needs. */
function needs(r: InterceptRecord): { rules: ip.MarkRule[]; routes: ip.LocalRoute[] } {
  const s = r.settings;
  const families = familiesOf(s.rules);
  return {
    rules: families.map((family) => ({ family, priority: s.priority, mark: s.interceptMark, table: s.table })),
    routes: families.map((family) => ({ family, table: s.table })),
  };
}

/**
 * Make sure the rule, route and accept_local that `record`'s settings need
 * are there, listing in the record (saved before each change) those of
 * accel it uses. `record` is the caller's own, changed in place.
 */
export function acquireShared(record: InterceptRecord): Promise<void> {
  return underPinRootLockAsync(async () => {
    const others = neighbours(record).records;
    const want = needs(record);
    const listed = {
      rule: (r: ip.MarkRule) => others.some((o) => o.added.rules.some((x) => sameRule(x, r))),
      route: (r: ip.LocalRoute) => others.some((o) => o.added.routes.some((x) => sameRoute(x, r))),
    };

    const acceptLocal = ip.readSysctl(ACCEPT_LOCAL);
    if (acceptLocal !== '1') {
      record.added.acceptLocal = acceptLocal;
      saveRecord(record);
      ip.writeSysctl(ACCEPT_LOCAL, '1');
    } else if (record.added.acceptLocal === null) {
      // Set by another interception of accel: the value to restore is
      // the one it recorded.
      const before = others.find((o) => o.added.acceptLocal !== null)?.added.acceptLocal ?? null;
      if (before !== null) {
        record.added.acceptLocal = before;
        saveRecord(record);
      }
    }
    for (const route of want.routes) {
      if (record.added.routes.some((x) => sameRoute(x, route))) {
        await ip.addLocalRoute(route);
      } else if (!(await ip.hasLocalRoute(route))) {
        record.added.routes.push(route);
        saveRecord(record);
        await ip.addLocalRoute(route);
      } else if (listed.route(route)) {
        record.added.routes.push(route);
        saveRecord(record);
      }
    }
    for (const rule of want.rules) {
      if (record.added.rules.some((x) => sameRule(x, rule))) {
        await ip.addMarkRule(rule);
      } else if (!(await ip.hasMarkRule(rule))) {
        record.added.rules.push(rule);
        saveRecord(record);
        await ip.addMarkRule(rule);
      } else if (listed.rule(rule)) {
        record.added.rules.push(rule);
        saveRecord(record);
      }
    }
  });
}

/**
 * Remove the shared resources `record` lists that no other interception in
 * the namespace lists. An interception that needs one but does not list
 * it yet has not reached acquireShared: it adds the resource again there.
 * While another record of the node cannot be read, nothing shared is
 * removed: it may list them (a leftover rule costs nothing, a missing one
 * breaks an interception).
 */
export function releaseShared(record: InterceptRecord): Promise<void> {
  return underPinRootLockAsync(async () => {
    const { records: others, unreadable } = neighbours(record);
    if (unreadable.length) {
      log.warn(`leaving the shared ip rules, routes and accept_local of ${record.cgroupPath} in place: ${unreadable.join('; ')}`);
      return;
    }
    const kept: string[] = [];
    for (const r of record.added.rules) {
      if (others.some((o) => o.added.rules.some((x) => sameRule(x, r)))) kept.push(`ip -${r.family} rule ${r.priority}`);
      else await ip.deleteMarkRule(r);
    }
    for (const r of record.added.routes) {
      if (others.some((o) => o.added.routes.some((x) => sameRoute(x, r)))) kept.push(`ip -${r.family} route table ${r.table}`);
      else await ip.deleteLocalRoute(r);
    }
    if (record.added.acceptLocal !== null) {
      if (others.some((o) => o.added.acceptLocal !== null)) kept.push('accept_local');
      else ip.writeSysctl(ACCEPT_LOCAL, record.added.acceptLocal);
    }
    if (kept.length) log.verbose(`${kept.join(', ')} of ${record.cgroupPath} stay for the other interceptions of this namespace`);
  });
}
