/** What an interception needs before anything is changed: good input, a
 * registered proxy on the port, no rule, table or filter of someone else in
 * the way. */
import { AccelError, ErrorCodes } from '../errors.js';
import { RULES_MAX } from '../maps/tproxy.js';
import { readProxyListeners } from '../maps/proxy-listeners.js';
import { proxyListenersPin } from '../paths.js';
import { listenerHolders, takeListeners } from '../sys/peer-sockets.js';
import { type Family, closeSocket, currentNetnsCookie } from '../sys/socket.js';
import * as ip from '../net/iproute.js';
import { tcMode } from './hooks.js';
import { checkEgressGuard } from './egress-guard.js';
import { type InterceptRecord } from './record.js';
import { type InterceptSettings, familiesOf } from './settings.js';

/** The families the proxy port has a registered accel proxy listener for
 * in this network namespace (the only listeners the lo program hands new
 * connections to). */
export function registeredProxyFamilies(bpffs: string, port: number): Family[] {
  const netns = currentNetnsCookie();
  return readProxyListeners(bpffs, (m) => ([4, 6] as const).filter((family) => m.cookie({ netns, family, port }) !== null)) ?? [];
}

/** Checks that need no change to the system: bad input, a proxy that does
 * not listen or whose listener is not an accel proxy's, rules/tables/filters
 * of someone else in the way. What `own` (this cgroup's current
 * interception) added is not someone else's. */
export async function checkIntercept(s: InterceptSettings, bpffs: string, own: InterceptRecord | null = null): Promise<Map<string, number>> {
  if (!s.rules.length) throw new AccelError(ErrorCodes.USAGE, 'interception needs at least one --intercept rule');
  if (s.rules.length > RULES_MAX) throw new AccelError(ErrorCodes.USAGE, `at most ${RULES_MAX} intercept rules`);
  if (!s.ifaces.length) throw new AccelError(ErrorCodes.USAGE, 'interception needs --iface');
  checkEgressGuard(s);
  if (s.interceptMark === s.proxyMark || !s.interceptMark) throw new AccelError(ErrorCodes.USAGE, 'the intercept mark must be non-zero and differ from the proxy mark');
  const indexes = new Map<string, number>();
  for (const name of new Set([...s.ifaces, 'lo'])) {
    const link = await ip.interfaceInfo(name);
    // The egress program reads an Ethernet header and hands packets to lo
    // as Ethernet frames: on a device without one (tun, WireGuard, IP
    // tunnels) it would match nothing and steer nothing.
    if (name !== 'lo' && link.linkType !== 'ether') {
      throw new AccelError(
        ErrorCodes.USAGE,
        `interface ${name} has no Ethernet header (link type ${link.linkType}): interception cannot steer its packets; give the Ethernet interface the connections leave through, or lo`,
      );
    }
    indexes.set(name, link.ifindex);
  }

  const families = familiesOf(s.rules);
  const listening = ip.loopbackListening(s.proxyPort);
  const registered = registeredProxyFamilies(bpffs, s.proxyPort);
  // A proxy that is not accel's: registered by the plan's register-proxy
  // step, from the listeners it holds now.
  if (s.proxyPid !== null) {
    const held = takeListeners(s.proxyPid, s.proxyPort);
    held.forEach((l) => closeSocket(l.fd));
    registered.push(...held.map((l) => l.family).filter((f) => !registered.includes(f)));
    const missing = families.filter((f) => !registered.includes(f));
    if (missing.length) {
      throw new AccelError(
        ErrorCodes.PROXY_NOT_LISTENING,
        `process ${s.proxyPid} holds no IPv${missing.join('/IPv')} socket listening on port ${s.proxyPort} in this network namespace (a dual-stack socket counts as IPv6 only: bind one per family)`,
      );
    }
  }
  for (const family of families) {
    const where = `${family === 4 ? '127.0.0.1' : '[::1]'}:${s.proxyPort}`;
    if (registered.includes(family)) continue;
    if (!(family === 4 ? listening.ipv4 : listening.ipv6)) {
      throw new AccelError(ErrorCodes.PROXY_NOT_LISTENING, `nothing listens on ${where} in this network namespace; start the proxy first (accel proxy --port ${s.proxyPort})`);
    }
    // Someone listens, but no accel proxy registered a listener: the lo
    // program would refuse every connection rather than hand it over.
    // Name the process: a HAProxy or Envoy there is registered with
    // --proxy-pid, not replaced.
    const holders = listenerHolders(s.proxyPort);
    const who = holders.length ? ` (held by ${holders.map((h) => `process ${h.pid}${h.comm ? ` ${h.comm}` : ''}`).join(', ')})` : '';
    const pid = holders.length === 1 ? String(holders[0]?.pid) : 'PID';
    throw new AccelError(
      ErrorCodes.PROXY_NOT_REGISTERED,
      `the listener on ${where}${who} is not an accel proxy's (none is registered for this network namespace in ${proxyListenersPin(bpffs)}), so intercepted connections would be refused; if it is a transparent proxy such as HAProxy or Envoy, add --proxy-pid ${pid} to register its listeners; otherwise start accel proxy --port ${s.proxyPort} instead`,
    );
  }
  for (const family of families) {
    const rule = { family, priority: s.priority, mark: s.interceptMark, table: s.table };
    const ours = own?.added.rules.some((r) => r.family === family && r.priority === s.priority) ?? false;
    if (!ours && !(await ip.hasMarkRule(rule)) && (await ip.priorityTaken(rule))) {
      throw new AccelError(ErrorCodes.INTERCEPT_CONFLICT, `ip -${family} rule priority ${s.priority} is already used by another rule (choose --rule-priority)`);
    }
    const ourTable = own?.added.routes.some((r) => r.family === family && r.table === s.table) ?? false;
    if (!ourTable && (await ip.foreignRoutes({ family, table: s.table })) > 0) {
      throw new AccelError(ErrorCodes.INTERCEPT_CONFLICT, `routing table ${s.table} (IPv${family}) already holds routes of someone else (choose --table)`);
    }
  }
  // tcx links never clash with other programs; tc filters share priorities.
  if (tcMode() === 'tc') {
    for (const [dev, direction] of [...s.ifaces.map((i) => [i, 'egress'] as const), ['lo', 'ingress'] as const]) {
      const ours = own?.added.hooks.some((h) => h.mode === 'tc' && h.dev === dev && h.direction === direction && h.priority === s.priority) ?? false;
      if (!ours && (await ip.filters(dev, direction)).some((f) => f.priority === s.priority)) {
        throw new AccelError(ErrorCodes.INTERCEPT_CONFLICT, `a tc filter already sits at priority ${s.priority} on ${dev} ${direction} (choose --rule-priority)`);
      }
    }
  }
  return indexes;
}
