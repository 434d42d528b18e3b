/**
 * What the bench compares: one scenario per data path, and the targets the
 * project holds itself to, as ratios between scenarios of the same run.
 */
export type ScenarioId =
  | 'unix'
  | 'direct'
  | 'fastpath'
  | 'proxy'
  | 'proxy-fastpath'
  | 'shortcut'
  | 'splice'
  | 'splice-fastpath'
  | 'haproxy'
  | 'inbound-proxy'
  | 'inbound-haproxy'
  | 'outbound-proxy'
  | 'outbound-shortcut'
  | 'outbound-haproxy';

/**
 * Where client, proxy and server are. local: all three in one network
 * namespace, over lo. The two halves of a sidecar, with a second namespace
 * (the peer) joined by a veth pair: inbound, a client in the peer, the
 * proxy and the service it stands in front of in the site's namespace;
 * outbound, the application and its proxy in the site's namespace, the
 * server in the peer.
 */
export type Topology = 'local' | 'inbound' | 'outbound';

export interface Scenario {
  id: ScenarioId;
  label: string;
  /** Who stands between client and server. */
  proxy: 'none' | 'relay' | 'splice' | 'haproxy';
  /** accel attach on the cgroup; without it, accel scenarios that need
   * interception still attach, with every bench port bypassed, so no socket
   * ever enters the SOCKHASH. */
  fastPath: boolean;
  /** accel proxy gives a connection the sk_msg shortcut where it can
   * (client and server local, on the fast path); the other accel proxy
   * scenarios run it with --no-shortcut, so they measure what they name. */
  shortcut?: boolean;
  /** The limit row: an AF_UNIX stream pair, measured by ipcpair only (no
   * servers, no TCP tools). */
  unixPair?: boolean;
  /** Default local. */
  topology?: Topology;
  description: string;
}

export const SCENARIOS: readonly Scenario[] = [
  {
    id: 'unix',
    label: 'AF_UNIX stream pair (limit)',
    proxy: 'none',
    fastPath: false,
    unixPair: true,
    description: 'two local processes on an AF_UNIX stream pair: the limit of local IPC through the socket API (ipcpair only)',
  },
  { id: 'direct', label: 'direct', proxy: 'none', fastPath: false, description: 'client to server over loopback, nothing attached (the floor)' },
  { id: 'proxy', label: 'accel proxy (user space)', proxy: 'relay', fastPath: false, description: 'intercepted (tc on lo) to accel proxy, relayed in user space' },
  { id: 'haproxy', label: 'HAProxy (tcp mode)', proxy: 'haproxy', fastPath: false, description: 'client to HAProxy in TCP mode to server, nothing attached' },
  { id: 'proxy-fastpath', label: 'accel proxy + fast path', proxy: 'relay', fastPath: true, description: 'as "proxy", both local hops on sockops + sk_msg' },
  {
    id: 'shortcut',
    label: 'accel proxy + shortcut',
    proxy: 'relay',
    fastPath: true,
    shortcut: true,
    description: 'intercepted to accel proxy, local upstream: after the decision client and server send to each other by sk_msg (the shortcut)',
  },
  { id: 'splice', label: 'accel proxy + splice', proxy: 'splice', fastPath: false, description: 'intercepted to accel proxy --splice: SK_SKB forwards the bytes' },
  {
    id: 'splice-fastpath',
    label: 'accel proxy + splice + fast path',
    proxy: 'splice',
    fastPath: true,
    description: 'as "splice" with the fast path attached; the proxy chooses per connection',
  },
  { id: 'fastpath', label: 'app to app + fast path', proxy: 'none', fastPath: true, description: 'as "direct", with accel attach (sockops + sk_msg)' },
  {
    id: 'inbound-proxy',
    label: 'inbound: accel proxy (user space)',
    proxy: 'relay',
    fastPath: false,
    topology: 'inbound',
    description: 'client in another namespace over a veth, steered (iptables TPROXY) to accel proxy, relayed to the local service',
  },
  {
    id: 'inbound-haproxy',
    label: 'inbound: HAProxy (tcp mode)',
    proxy: 'haproxy',
    fastPath: false,
    topology: 'inbound',
    description: "client in another namespace over a veth to HAProxy on the site's address, to the local service",
  },
  {
    id: 'outbound-proxy',
    label: 'outbound: accel proxy (user space)',
    proxy: 'relay',
    fastPath: false,
    topology: 'outbound',
    description: 'local application intercepted (tc on the veth) to accel proxy, relayed to a server in another namespace',
  },
  {
    id: 'outbound-shortcut',
    label: 'outbound: accel proxy + egress shortcut',
    proxy: 'relay',
    fastPath: true,
    shortcut: true,
    topology: 'outbound',
    description:
      "as outbound-proxy, the proxy and the application on the fast path: after the decision the application's sends go by sk_msg straight out on the proxy's upstream socket (the egress shortcut)",
  },
  {
    id: 'outbound-haproxy',
    label: 'outbound: HAProxy (tcp mode)',
    proxy: 'haproxy',
    fastPath: false,
    topology: 'outbound',
    description: 'local application to HAProxy on lo, to a server in another namespace over a veth',
  },
];

/** The veth pair of the inbound and outbound scenarios: the site's end and
 * the peer's, in namespaces the bench makes (each scenario its own pair). */
export const BENCH_VETH = {
  site: { dev: 'bench0', address: '10.231.0.1' },
  peer: { dev: 'bench1', address: '10.231.0.2' },
  prefixLength: 30,
} as const;

/** Ports inside each scenario's own network namespace. */
export const BENCH_PORTS = {
  latency: 7001,
  throughput: 7002,
  connections: 7003,
  /** HAProxy's frontends: server port + this offset. */
  haproxyOffset: 1000,
  proxy: 15001,
} as const;

export type MetricId = 'p50_64' | 'p99_64' | 'p50_4k' | 'p99_4k' | 'gbps' | 'cpuPerGB' | 'proxyCpuPerGB' | 'connPerSec' | 'pairGbps' | 'pairP50';

export const METRICS: Record<MetricId, { label: string; unit: string; better: 'lower' | 'higher' }> = {
  p50_64: { label: 'round trip p50, 64 B', unit: 'us', better: 'lower' },
  p99_64: { label: 'round trip p99, 64 B', unit: 'us', better: 'lower' },
  p50_4k: { label: 'round trip p50, 4 KB', unit: 'us', better: 'lower' },
  p99_4k: { label: 'round trip p99, 4 KB', unit: 'us', better: 'lower' },
  gbps: { label: 'throughput, 64 KB writes', unit: 'Gbit/s', better: 'higher' },
  cpuPerGB: { label: 'machine CPU per GB moved', unit: 's/GB', better: 'lower' },
  proxyCpuPerGB: { label: 'proxy process CPU per GB', unit: 's/GB', better: 'lower' },
  connPerSec: { label: 'new connections per second', unit: '/s', better: 'higher' },
  pairGbps: { label: 'throughput, 64 KB writes, one process pair (ipcpair)', unit: 'Gbit/s', better: 'higher' },
  pairP50: { label: 'round trip p50, 64 B, one process pair (ipcpair)', unit: 'us', better: 'lower' },
};

/** The figures of the process-pair workloads (ipcpair), which only scenarios
 * without a proxy have: the same load over AF_UNIX and over TCP. */
export const PAIR_METRICS: readonly MetricId[] = ['pairGbps', 'pairP50'];

/** Does a scenario run the process-pair workloads (ipcpair)? */
export const runsPair = (s: Pick<Scenario, 'proxy'>): boolean => s.proxy === 'none';

/** The median of each figure per scenario, as a report summarizes a run. */
export type Summary = Partial<Record<ScenarioId, Partial<Record<MetricId, number>>>>;

export interface Target {
  text: string;
  metric: MetricId;
  scenario: ScenarioId;
  /** Compared with another scenario's figure (ratio), or an absolute bound. */
  versus?: ScenarioId;
  /** scenario <= factor * versus (or <= factor) for lower-is-better metrics, >= for higher. */
  factor: number;
}

export const TARGETS: readonly Target[] = [
  { text: 'splice: latency p50 (64 B) <= 1.1x direct', metric: 'p50_64', scenario: 'splice', versus: 'direct', factor: 1.1 },
  { text: 'splice: latency p50 (4 KB) <= 1.1x direct', metric: 'p50_4k', scenario: 'splice', versus: 'direct', factor: 1.1 },
  { text: 'splice: latency p50 (64 B) <= 0.7x HAProxy', metric: 'p50_64', scenario: 'splice', versus: 'haproxy', factor: 0.7 },
  { text: 'splice: throughput >= 0.8x direct', metric: 'gbps', scenario: 'splice', versus: 'direct', factor: 0.8 },
  { text: 'splice: throughput >= 1.5x HAProxy', metric: 'gbps', scenario: 'splice', versus: 'haproxy', factor: 1.5 },
  { text: "splice: proxy's own CPU <= 0.1x the user-space relay's", metric: 'proxyCpuPerGB', scenario: 'splice', versus: 'proxy', factor: 0.1 },
  { text: 'proxy + fast path: latency p50 (64 B) <= 0.85x proxy', metric: 'p50_64', scenario: 'proxy-fastpath', versus: 'proxy', factor: 0.85 },
  { text: 'proxy + fast path: latency p50 (4 KB) <= 0.85x proxy', metric: 'p50_4k', scenario: 'proxy-fastpath', versus: 'proxy', factor: 0.85 },
  { text: 'proxy + shortcut: throughput >= 0.9x app to app + fast path', metric: 'gbps', scenario: 'shortcut', versus: 'fastpath', factor: 0.9 },
  { text: 'proxy + shortcut: throughput >= 3x HAProxy', metric: 'gbps', scenario: 'shortcut', versus: 'haproxy', factor: 3 },
  { text: 'proxy + shortcut: latency p50 (64 B) <= 1.2x app to app + fast path', metric: 'p50_64', scenario: 'shortcut', versus: 'fastpath', factor: 1.2 },
  { text: 'proxy + shortcut: latency p50 (64 B) <= 0.35x HAProxy', metric: 'p50_64', scenario: 'shortcut', versus: 'haproxy', factor: 0.35 },
  { text: 'proxy + shortcut: machine CPU per GB <= 0.5x HAProxy', metric: 'cpuPerGB', scenario: 'shortcut', versus: 'haproxy', factor: 0.5 },
  { text: 'app to app + fast path: latency p50 (64 B) <= 0.9x direct', metric: 'p50_64', scenario: 'fastpath', versus: 'direct', factor: 0.9 },
  { text: 'app to app + fast path: latency p50 (4 KB) <= 0.9x direct', metric: 'p50_4k', scenario: 'fastpath', versus: 'direct', factor: 0.9 },
  { text: 'app to app + fast path: throughput >= 1.0x direct', metric: 'gbps', scenario: 'fastpath', versus: 'direct', factor: 1.0 },
  { text: 'sockops attached: new connections/s >= 0.95x direct', metric: 'connPerSec', scenario: 'fastpath', versus: 'direct', factor: 0.95 },
  { text: 'app to app + fast path: throughput >= 0.9x AF_UNIX (ipcpair)', metric: 'pairGbps', scenario: 'fastpath', versus: 'unix', factor: 0.9 },
  { text: 'app to app + fast path: latency p50 (64 B) <= 1.0x AF_UNIX (ipcpair)', metric: 'pairP50', scenario: 'fastpath', versus: 'unix', factor: 1.0 },
  { text: 'accel proxy: new connections/s >= 1.0x HAProxy', metric: 'connPerSec', scenario: 'proxy', versus: 'haproxy', factor: 1.0 },
  { text: 'accel proxy (user space): throughput >= 0.8x HAProxy', metric: 'gbps', scenario: 'proxy', versus: 'haproxy', factor: 0.8 },
  { text: 'inbound: accel proxy new connections/s >= 1.0x HAProxy', metric: 'connPerSec', scenario: 'inbound-proxy', versus: 'inbound-haproxy', factor: 1.0 },
  { text: 'inbound: accel proxy (user space) throughput >= 0.8x HAProxy', metric: 'gbps', scenario: 'inbound-proxy', versus: 'inbound-haproxy', factor: 0.8 },
  { text: 'outbound: accel proxy new connections/s >= 1.0x HAProxy', metric: 'connPerSec', scenario: 'outbound-proxy', versus: 'outbound-haproxy', factor: 1.0 },
  { text: 'outbound: accel proxy (user space) throughput >= 0.8x HAProxy', metric: 'gbps', scenario: 'outbound-proxy', versus: 'outbound-haproxy', factor: 0.8 },
  { text: 'outbound: egress shortcut throughput >= 1.0x HAProxy', metric: 'gbps', scenario: 'outbound-shortcut', versus: 'outbound-haproxy', factor: 1.0 },
  {
    text: "outbound: egress shortcut, proxy's own CPU per GB <= 0.1x HAProxy's",
    metric: 'proxyCpuPerGB',
    scenario: 'outbound-shortcut',
    versus: 'outbound-haproxy',
    factor: 0.1,
  },
];

export function selectScenarios(ids: string[] | undefined): Scenario[] {
  if (!ids?.length) return [...SCENARIOS];
  return SCENARIOS.filter((s) => ids.includes(s.id));
}
