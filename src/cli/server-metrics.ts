/**
 * /metrics, /healthz and /readyz of proxy, echo and relay (--metrics-addr):
 * the server's own counts and its splice object's kernel counters, read at
 * scrape time. Nothing is served unless asked for.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { serveEndpoints } from '../agent/http.js';
import type { SpliceCounters } from '../maps/layout/splice.js';

type Stats = Record<string, number>;
/** stat key -> metric (a counter unless its name has no _total), help, constant labels. */
type Table = [string, string, string, Record<string, string>?][];

/** One help text for the four series of accel_proxy_connections_by_path_total. */
const BY_PATH_HELP =
  'Allowed connections by the path the proxy gave them: shortcut (client and server may send to each other by sk_msg; the bytes that took it are accel_fastpath_shortcut_bytes_total), splice (SK_SKB in the kernel), relay (user space), inspect (user space, each HTTP request checked).';

const PROXY: Table = [
  ['accepted', 'accel_proxy_connections_accepted_total', 'Client connections taken in.'],
  ['refused', 'accel_proxy_connections_refused_total', 'Client connections reset at once: --max-connections were being handled.'],
  ['idleClosed', 'accel_proxy_connections_idle_closed_total', 'Connections closed after --idle-timeout-ms with nothing moving.'],
  ['allowed', 'accel_proxy_policy_decisions_total', 'Policy decisions on new connections, by decision.', { decision: 'allow' }],
  ['denied', 'accel_proxy_policy_decisions_total', 'Policy decisions on new connections, by decision.', { decision: 'deny' }],
  ['requestsDenied', 'accel_proxy_requests_denied_total', 'Inspected connections cut at a later HTTP request the policy denies.'],
  ['failed', 'accel_proxy_upstream_errors_total', 'Allowed connections whose upstream connect or relay failed.'],
  ['spliced', 'accel_proxy_connections_spliced_total', 'Allowed connections handed to the kernel (splice) rather than relayed in user space.'],
  ['shortcut', 'accel_proxy_connections_by_path_total', BY_PATH_HELP, { path: 'shortcut' }],
  ['spliced', 'accel_proxy_connections_by_path_total', BY_PATH_HELP, { path: 'splice' }],
  ['relayed', 'accel_proxy_connections_by_path_total', BY_PATH_HELP, { path: 'relay' }],
  ['inspected', 'accel_proxy_connections_by_path_total', BY_PATH_HELP, { path: 'inspect' }],
  ['loops', 'accel_proxy_loops_total', "The proxy's own upstream connections steered back to it (a mark mismatch), refused."],
  ['active', 'accel_proxy_connections_active', 'Client connections open now.'],
];

const spliceServer = (kind: string): Table => [
  ['accepted', `accel_${kind}_connections_accepted_total`, 'Clients taken in.'],
  ['refused', `accel_${kind}_connections_refused_total`, 'Clients reset at once: --max-connections were connected.'],
  ['idleClosed', `accel_${kind}_connections_idle_closed_total`, 'Connections closed after --idle-timeout-ms with nothing moving.'],
  ['spliced', `accel_${kind}_connections_spliced_total`, 'Connections handed to the kernel.'],
  ['closed', `accel_${kind}_connections_closed_total`, 'Connections closed.'],
  ['abandoned', `accel_${kind}_connections_abandoned_total`, 'Connections given up (no partner in time, or closed at stop).'],
  ['active', `accel_${kind}_connections_active`, 'Connections open now.'],
];

const SPLICE: [keyof SpliceCounters, string, string][] = [
  ['pairs_spliced', 'accel_splice_pairs_total', 'Socket pairs spliced in the kernel.'],
  ['pairs_closed', 'accel_splice_pairs_closed_total', 'Spliced pairs closed.'],
  ['bytes_redirected', 'accel_splice_bytes_total', 'Bytes moved between spliced sockets by the kernel.'],
  ['skbs_redirected', 'accel_splice_skbs_redirected_total', 'Packets (skbs) redirected between spliced sockets.'],
  ['skbs_passed', 'accel_splice_skbs_passed_total', 'Packets of spliced sockets passed to user space.'],
  ['holds', 'accel_splice_holds_total', 'Times a spliced sender was held back while its peer was behind.'],
  ['releases', 'accel_splice_releases_total', 'Times a held spliced sender was let go.'],
  ['fins_dropped', 'accel_splice_fins_dropped_total', 'FINs dropped by the splice (half-close handling).'],
];

export function serverRegistry(kind: 'proxy' | 'echo' | 'relay', stats: () => Stats, splice: () => SpliceCounters | null): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // prom-client's three gauges named _total (only counters may be).
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  const table = kind === 'proxy' ? PROXY : spliceServer(kind);
  const byName = new Map<string, { help: string; rows: [string, Record<string, string>][] }>();
  for (const [key, name, help, labels] of table) {
    const m = byName.get(name) ?? { help, rows: [] };
    m.rows.push([key, labels ?? {}]);
    byName.set(name, m);
  }
  for (const [name, { help, rows }] of byName) {
    const labelNames = [...new Set(rows.flatMap(([, l]) => Object.keys(l)))];
    if (name.endsWith('_total')) {
      new Counter({
        name,
        help,
        labelNames,
        registers: [registry],
        collect() {
          this.reset();
          const s = stats();
          for (const [key, l] of rows) this.inc(l, s[key] ?? 0);
        },
      });
    } else {
      new Gauge({
        name,
        help,
        labelNames,
        registers: [registry],
        collect() {
          const s = stats();
          for (const [key, l] of rows) this.set(l, s[key] ?? 0);
        },
      });
    }
  }
  for (const [key, name, help] of SPLICE) {
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        const c = splice();
        if (c) this.inc(Number(c[key]));
      },
    });
  }
  return registry;
}

/** Serve the registry at `address` until close(); the address it got. */
export function serveServerMetrics(address: string, registry: Registry): ReturnType<typeof serveEndpoints> {
  return serveEndpoints(address, { metrics: registry, refresh: async () => {}, unhealthy: () => null, ready: () => true });
}
