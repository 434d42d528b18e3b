import type { Command } from 'commander';
import type { PairResult } from '../../bench/measure.js';
import { type DemoReport, type DemoRun, type PathBytes, runDemo } from '../../demo/demo.js';
import { AccelError, ErrorCodes } from '../../errors.js';
import { requirePrivileges } from '../../privileges.js';
import type { GlobalOptions } from '../options.js';
import { print, printJson } from '../output.js';

/** "-36% (better)": the change from before to after, judged by which way is better. */
function change(before: number, after: number, better: 'lower' | 'higher'): string {
  if (!before) return '';
  const pct = ((after - before) / before) * 100;
  const good = better === 'lower' ? after < before : after > before;
  return `${pct >= 0 ? '+' : ''}${pct.toFixed(0)}% (${Math.abs(pct) < 3 ? 'about the same' : good ? 'better' : 'worse'})`;
}

const share = (part: bigint, all: bigint) => (all > 0n ? `${Math.round(Number((part * 1000n) / all) / 10)}%` : '-');

/** Where the fast-path run's bytes went, from the counters: what each figure above measured. */
function pathLines(path: DemoRun['path']): string[] {
  if (!path) return [];
  const line = (what: string, b: PathBytes) => {
    const all = b.redirected + b.heldBackViaTcp;
    return `  ${`${what}:`.padEnd(14)} ${b.redirected} bytes redirected by sk_msg (${share(b.redirected, all)}), ${b.heldBackViaTcp} sent the TCP way while the reader lagged (backpressure)`;
  };
  return ['  with the fast path, from its counters:', line('  round trips', path.roundTrip), line('  throughput', path.throughput)];
}

function formatDemo(r: DemoReport): string {
  const [before, after] = r.runs;
  const s = r.settings;
  const row = (label: string, cells: string[]) => `  ${label.padEnd(18)}${cells.map((c, i) => (i === 0 ? c.padStart(12) : c.padStart(22))).join('')}`;
  const lines = [
    '',
    row('', ['round trip p50', 'round trip p99', 'throughput']),
    ...r.runs.map((x) => row(x.label, [`${x.roundTrip.p50us.toFixed(1)} us`, `${x.roundTrip.p99us.toFixed(1)} us`, `${x.throughput.gbps.toFixed(1)} Gbit/s`])),
  ];
  if (before && after) {
    lines.push(
      row('change', [
        change(before.roundTrip.p50us, after.roundTrip.p50us, 'lower'),
        change(before.roundTrip.p99us, after.roundTrip.p99us, 'lower'),
        change(before.throughput.gbps, after.throughput.gbps, 'higher'),
      ]),
    );
  }
  const { unix, fastPath } = r.limit;
  const pairRow = (label: string, p: PairResult) => row(label, [`${p.p50us.toFixed(1)} us`, `${p.p99us.toFixed(1)} us`, `${p.gbps.toFixed(1)} Gbit/s`]);
  lines.push(
    '',
    row('', ['round trip p50', 'round trip p99', 'throughput']),
    pairRow('AF_UNIX (limit)', unix),
    pairRow('accel fast path', fastPath),
    row('fast / AF_UNIX', [`${(fastPath.p50us / unix.p50us).toFixed(2)}x`, `${(fastPath.p99us / unix.p99us).toFixed(2)}x`, `${(fastPath.gbps / unix.gbps).toFixed(2)}x`]),
  );
  lines.push(
    '',
    `  round trip: sockperf ping-pong over loopback TCP, one connection, ${s.messageBytes}-byte messages for ${s.seconds.latency} s;`,
    '              p50 is the median time for a message to go and its reply to come back, p99 the time 99% of them beat (lower is better)',
    `  throughput: iperf3, one TCP stream of 64 KB writes for ${s.seconds.throughput} s: what the receiver got, per second (higher is better)`,
    `  both: client and server in their own network namespace and cgroup, on CPU ${s.cpus}, as \`accel bench\` measures them`,
    ...pathLines(after?.path ?? null),
    '  the limit: ipcpair, the same load (one process pair, 64 KB writes, 64-byte ping-pong) over an AF_UNIX stream pair and over the fast path;',
    '             the fast path as a ratio to AF_UNIX, the most local IPC through the socket API can do',
    '  one short run, not a benchmark: `accel bench` repeats each figure and checks the targets',
  );
  return lines.join('\n');
}

export function registerDemo(program: Command, globals: () => GlobalOptions): void {
  program
    .command('demo')
    .description(
      "show the fast path on this machine: the bench's load tools between two local processes in a throwaway namespace and child cgroup, before and after attach (under a minute)",
    )
    .option('--json', 'print the report as JSON', false)
    .action(async (opts: { json: boolean }) => {
      requirePrivileges();
      const g = globals();
      // Ctrl-C or SIGTERM: stop at the next step; the namespaces, cgroups and attachment made so far are removed.
      const abort = new AbortController();
      const onSignal = () => abort.abort();
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        const report = await runDemo({ bpffs: g.bpffs, bpfDir: g.bpfDir, say: opts.json ? () => {} : print, signal: abort.signal });
        if (opts.json) return printJson(report);
        print(formatDemo(report));
      } catch (err) {
        if (abort.signal.aborted) throw new AccelError(ErrorCodes.INTERRUPTED, 'demo interrupted; everything it set up was removed', { cause: err });
        throw err;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}
