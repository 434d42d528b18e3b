/**
 * The agent's Prometheus metrics (prom-client). Every value is read at
 * scrape time: the kernel's counters of each attachment through the status
 * readers (src/fastpath/status.ts, src/intercept/status.ts), exposed as
 * counters whose value is the kernel's; the agent's own state as gauges.
 * Labels: cgroup (relative to the agent's cgroup root), selection, and
 * namespace and pod when the cgroup is a pod's. No per-connection label.
 */
import fs from 'node:fs';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { readSelftestRecord } from '../attachment/selftest-record.js';
import { mapInfo } from '../bpf/fd.js';
import { withMaps } from '../fastpath/pins.js';
import { interceptStatus } from '../intercept/status.js';
import { observeIntercept } from '../intercept/remove.js';
import type { Counters } from '../maps/layout/fastpath.js';
import type { TproxyCounters } from '../maps/layout/tproxy.js';
import { attachmentPinDir } from '../paths.js';
import type { ReaderSafety } from '../fastpath/readers.js';
import type { Agent } from './agent.js';

type Labels = { cgroup: string; selection: string; namespace: string; pod: string };
const LABELS = ['cgroup', 'selection', 'namespace', 'pod'] as const;

/** What one scrape reads of one attachment: only the values exposed. */
interface Snapshot {
  labels: Labels;
  sockets: number;
  maxSockets: number;
  listeners: number;
  counters: Counters;
  readers: ReaderSafety[] | null;
  intercept: { counters: TproxyCounters | null; flows: number | null; maxFlows: number } | null;
}

/** Read every attachment of the agent once per scrape, from its pinned
 * maps (each fd closed once read); one whose maps cannot be read (being
 * removed) is left out. */
async function snapshot(agent: Agent, bpffs: string): Promise<Snapshot[]> {
  const out: Snapshot[] = [];
  for (const [id, tr] of agent.tracked) {
    if (tr.state === 'failed') continue;
    const dir = attachmentPinDir(bpffs, id);
    if (!fs.existsSync(dir)) continue;
    let fastPath: Pick<Snapshot, 'sockets' | 'maxSockets' | 'listeners' | 'counters'>;
    try {
      fastPath = withMaps(dir, (m) => ({ sockets: m.socketCount(), maxSockets: mapInfo(m.fds.sockHash).maxEntries, listeners: m.listenerCount(), counters: m.counters() }));
    } catch {
      continue;
    }
    const rec = readSelftestRecord(id);
    const ic = await interceptStatus(observeIntercept(id), bpffs, dir);
    const t = tr.target;
    out.push({
      labels: { cgroup: t.rel, selection: t.selection, namespace: t.pod?.namespace ?? '', pod: t.pod?.name ?? '' },
      ...fastPath,
      readers: rec.record?.tested ? rec.record.readers : null,
      intercept: ic && { counters: ic.counters, flows: ic.flows, maxFlows: ic.settings.maxFlows },
    });
  }
  return out;
}

export interface AgentMetrics {
  registry: Registry;
  /** Take the snapshot the collect callbacks read; call before registry.metrics(). */
  refresh(): Promise<void>;
  /** After a family's text is made: its per-attachment series are dropped. */
  written(name: string): void;
  /** After the scrape: forget the snapshot and the per-attachment series
   * (a thousand attachments make some 18,000) until the next scrape, when
   * the last scrape in flight is done. */
  release(): void;
}

export function agentMetrics(agent: Agent, bpffs: string): AgentMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // prom-client names three gauges _total, which only counters may be
  // (promtool check metrics refuses them): left out.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) registry.removeSingleMetric(name);
  let snap: Snapshot[] = [];
  let scrapes = 0;
  /** The metrics whose series are per attachment, emptied once written. */
  const perAttachment = new Map<string, Gauge | Counter>();

  const fpCounter = (name: string, help: string, value: (c: Counters) => bigint, extra: Record<string, string> = {}, labelNames: string[] = []) => ({
    name,
    help,
    value,
    extra,
    labelNames,
  });
  const gauge = (name: string, help: string, labelNames: readonly string[], fill: (g: Gauge) => void) => {
    const g = new Gauge({
      name,
      help,
      labelNames: [...labelNames],
      registers: [registry],
      collect() {
        this.reset();
        fill(this);
      },
    });
    if (labelNames.includes('cgroup')) perAttachment.set(name, g);
    return g;
  };

  gauge('accel_fastpath_sockets', 'Sockets in the fast path map (both ends of a connection count).', LABELS, (g) => {
    for (const s of snap) g.set(s.labels, s.sockets);
  });
  gauge('accel_fastpath_map_capacity_sockets', 'Sockets the fast path map can hold (--max-sockets).', LABELS, (g) => {
    for (const s of snap) g.set(s.labels, s.maxSockets);
  });
  gauge('accel_fastpath_map_fill_ratio', 'Sockets in the fast path map over its capacity (0 to 1).', LABELS, (g) => {
    for (const s of snap) if (s.maxSockets) g.set(s.labels, s.sockets / s.maxSockets);
  });
  gauge('accel_fastpath_listeners', 'Listening sockets of the cgroup known to the fast path.', LABELS, (g) => {
    for (const s of snap) g.set(s.labels, s.listeners);
  });
  gauge(
    'accel_selftest_reader_safe',
    'Per reader kind, what the self-test found on this kernel: 1 safe on the fast path, 0 unsafe (absent: not tested).',
    [...LABELS, 'reader'],
    (g) => {
      for (const s of snap) for (const r of s.readers ?? []) g.set({ ...s.labels, reader: r.kind }, r.safe ? 1 : 0);
    },
  );

  const counters = [
    fpCounter('accel_fastpath_redirected_bytes_total', 'Bytes sent through the fast path (sk_msg redirect).', (c) => c.bytes_redirected),
    fpCounter('accel_fastpath_redirected_messages_total', 'Messages (sendmsg calls) sent through the fast path.', (c) => c.messages_redirected),
    fpCounter('accel_fastpath_passed_bytes_total', 'Bytes of fast path sockets sent the TCP way (held back, or not redirectable).', (c) => c.bytes_passed),
    fpCounter('accel_fastpath_passed_messages_total', 'Messages of fast path sockets sent the TCP way.', (c) => c.messages_passed),
    fpCounter(
      'accel_fastpath_tcp_fallback_connections_total',
      'Connections that fell back to TCP for good (bytes went the TCP way before both ends joined).',
      (c) => c.connections_tcp_only,
    ),
    fpCounter('accel_fastpath_backpressure_holds_total', 'Times a writer was held back because its reader was queue-limit bytes behind.', (c) => c.backpressure_engaged),
    fpCounter('accel_fastpath_backpressure_releases_total', 'Times a held writer was let back onto the fast path.', (c) => c.backpressure_released),
    fpCounter('accel_fastpath_held_bytes_total', 'Bytes sent the TCP way while their writer was held back.', (c) => c.bytes_held),
    fpCounter(
      'accel_fastpath_shortcut_directions_total',
      "Directions of accel proxy's connections that sent by the shortcut (client and server straight to each other).",
      (c) => c.shortcut_directions,
    ),
    fpCounter('accel_fastpath_shortcut_bytes_total', 'Bytes sent by a shortcut of accel proxy.', (c) => c.shortcut_bytes),
    fpCounter(
      'accel_fastpath_shortcut_detoured_bytes_total',
      'Bytes of shortcut connections sent through the proxy instead (hand-off not over, or the reader a queue limit behind).',
      (c) => c.shortcut_bytes_detoured,
    ),
    fpCounter('accel_fastpath_shortcut_resumed_total', 'Times a shortcut was taken (again) after bytes of its direction went through the proxy.', (c) => c.shortcut_resumed),
    fpCounter('accel_fastpath_sockets_inserted_total', 'Sockets put in the fast path map.', (c) => c.sockets_inserted),
    fpCounter('accel_fastpath_socket_insert_failures_total', 'Sockets the fast path map refused (full, or a kernel error).', (c) => c.socket_insert_failed),
  ];
  for (const def of counters) {
    const c = new Counter({
      name: def.name,
      help: def.help,
      labelNames: [...LABELS],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of snap) this.inc(s.labels, Number(def.value(s.counters)));
      },
    });
    perAttachment.set(def.name, c);
  }
  const skipped: [string, keyof Counters][] = [
    ['remote', 'sockets_skipped_remote'],
    ['peer', 'sockets_skipped_peer'],
    ['bypass', 'sockets_skipped_bypass'],
    ['data', 'sockets_skipped_data'],
  ];
  const skippedCounter = new Counter({
    name: 'accel_fastpath_sockets_skipped_total',
    help: 'Sockets kept off the fast path, by reason: remote peer, peer not in an attached cgroup, bypass port, data sent before joining.',
    labelNames: [...LABELS, 'reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of snap) for (const [reason, k] of skipped) this.inc({ ...s.labels, reason }, Number(s.counters[k]));
    },
  });
  perAttachment.set('accel_fastpath_sockets_skipped_total', skippedCounter);

  const ic = (name: string, help: string, parts: [Record<string, string>, keyof TproxyCounters][], extraLabel: string[] = []) => {
    const c = new Counter({
      name,
      help,
      labelNames: [...LABELS, ...extraLabel],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of snap) if (s.intercept?.counters) for (const [l, k] of parts) this.inc({ ...s.labels, ...l }, Number(s.intercept.counters[k]));
      },
    });
    perAttachment.set(name, c);
  };
  ic('accel_intercept_packets_seen_total', 'Packets of the cgroup the interception hook saw.', [[{}, 'packets_seen']]);
  ic('accel_intercept_packets_intercepted_total', 'Packets steered to the proxy.', [[{}, 'packets_intercepted']]);
  ic('accel_intercept_syns_intercepted_total', 'Connections (SYNs) steered to the proxy.', [[{}, 'connections_intercepted']]);
  ic('accel_intercept_proxy_packets_skipped_total', "Packets of the proxy's own upstream connections, left unsteered.", [[{}, 'proxy_packets_skipped']]);
  ic(
    'accel_intercept_assigned_total',
    'Steered packets assigned to a proxy socket, by socket kind.',
    [
      [{ socket: 'established' }, 'assigned_established'],
      [{ socket: 'listener' }, 'assigned_listener'],
    ],
    ['socket'],
  );
  ic(
    'accel_intercept_dropped_total',
    'Steered packets dropped, by reason.',
    [
      [{ reason: 'assign_failed' }, 'assign_failed'],
      [{ reason: 'no_listener' }, 'no_listener'],
      [{ reason: 'foreign_listener' }, 'foreign_listener'],
      [{ reason: 'unparsed' }, 'unparsed_dropped'],
      [{ reason: 'flows_full' }, 'flows_full'],
    ],
    ['reason'],
  );
  ic('accel_intercept_syn_ip_options_total', 'Steered SYNs with IPv4 options or IPv6 extension headers.', [[{}, 'syn_ip_options']]);
  ic('accel_intercept_flows_closed_total', "Flows removed because the application's socket closed.", [[{}, 'flows_closed']]);
  gauge('accel_intercept_flows', 'Connections steered to the proxy and open now.', LABELS, (g) => {
    for (const s of snap) if (s.intercept?.flows != null) g.set(s.labels, s.intercept.flows);
  });
  gauge('accel_intercept_max_flows', 'Connections that may be steered to the proxy at once (--max-flows).', LABELS, (g) => {
    for (const s of snap) if (s.intercept) g.set(s.labels, s.intercept.maxFlows);
  });

  gauge(
    'accel_agent_attachments',
    'Cgroups the agent selects, by state: attached (by this process), adopted (found as asked after a restart), upgraded (found running another build of the programs, replaced in place), failed (retried).',
    ['state'],
    (g) => {
      const n = { attached: 0, adopted: 0, upgraded: 0, failed: 0 };
      for (const t of agent.tracked.values()) n[t.state]++;
      for (const [state, v] of Object.entries(n)) g.set({ state }, v);
    },
  );
  new Counter({
    name: 'accel_agent_reconciles_total',
    help: 'Reconciles of one cgroup by the agent, by result.',
    labelNames: ['result'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [result, v] of Object.entries(agent.stats.reconciles)) this.inc({ result }, v);
    },
  });
  new Counter({
    name: 'accel_agent_config_reloads_total',
    help: 'Configuration reloads (SIGHUP or a change of the file), by result; a failed one keeps the previous configuration.',
    labelNames: ['result'],
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ result: 'ok' }, agent.stats.configReloads.ok);
      this.inc({ result: 'failed' }, agent.stats.configReloads.failed);
    },
  });
  new Counter({
    name: 'accel_agent_scans_total',
    help: 'Scans of the cgroup tree.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(agent.stats.scans);
    },
  });
  gauge('accel_agent_scan_visited_cgroups', 'Cgroup directories the last scan visited.', [], (g) => g.set(agent.stats.lastScanVisited));
  gauge('accel_agent_ready', '1 once the agent has reconciled everything it selects at least once.', [], (g) => g.set(agent.ready ? 1 : 0));

  return {
    registry,
    refresh: async () => {
      scrapes++;
      snap = await snapshot(agent, bpffs);
    },
    written: (name) => perAttachment.get(name)?.reset(),
    release: () => {
      scrapes = Math.max(0, scrapes - 1);
      if (scrapes > 0) return;
      snap = [];
      for (const m of perAttachment.values()) m.reset();
    },
  };
}
