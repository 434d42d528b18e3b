import path from 'node:path';
import { type Command, InvalidArgumentError } from 'commander';
import { type BenchDurations, runBench } from '../../bench/bench.js';
import { formatReport, summarize } from '../../bench/report.js';
import { writeReport } from '../../bench/results.js';
import { SCENARIOS, selectScenarios } from '../../bench/scenarios.js';
import { AccelError, ErrorCodes } from '../../errors.js';
import { requirePrivileges } from '../../privileges.js';
import { type GlobalOptions, collect, parseCount } from '../options.js';
import { print, printJson } from '../output.js';

interface BenchCliOptions {
  quick: boolean;
  rounds?: number;
  seconds?: number;
  scenario: string[];
  out: string;
  cpus: string;
  json: boolean;
}

const FULL: BenchDurations = { latency: 5, throughput: 5, connections: 3 };
const QUICK: BenchDurations = { latency: 1, throughput: 2, connections: 1 };

function parseCpus(value: string): string {
  if (value !== 'all' && !/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(value)) throw new InvalidArgumentError(`"${value}" is not a CPU list (0, 0-1, 0,2) or "all"`);
  return value;
}

export function registerBench(program: Command, globals: () => GlobalOptions): void {
  program
    .command('bench')
    .description('measure every data path side by side (direct, accel proxy, HAProxy, fast path, splice) and check the targets')
    .option('--quick', 'one short round (under two minutes)', false)
    .option('--rounds <n>', 'rounds of every workload over every scenario (default 3, --quick 1)', parseCount(50))
    .option('--seconds <n>', 'seconds per measurement (default: latency 5, throughput 5, connections 3)', parseCount(600))
    .option('--scenario <id>', `only these scenarios (repeatable): ${SCENARIOS.map((s) => s.id).join(', ')}`, collect, [])
    .option('--cpus <list>', 'CPUs every bench process runs on (taskset list, e.g. 0 or 0-1), or "all" for no pinning', parseCpus, '0')
    .option('--out <dir>', 'where <timestamp>.json and .svg are written', 'bench-results')
    .option('--json', 'print the whole report as JSON', false)
    .addHelpText('after', '\nExamples:\n  accel bench --quick\n  accel bench --rounds 5 --scenario direct --scenario fastpath')
    .action(async (opts: BenchCliOptions) => {
      requirePrivileges();
      const unknown = opts.scenario.filter((id) => !SCENARIOS.some((s) => s.id === id));
      if (unknown.length) throw new AccelError(ErrorCodes.USAGE, `unknown scenario ${unknown.join(', ')} (known: ${SCENARIOS.map((s) => s.id).join(', ')})`);
      const base = opts.quick ? QUICK : FULL;
      const seconds: BenchDurations = opts.seconds ? { latency: opts.seconds, throughput: opts.seconds, connections: opts.seconds } : base;
      const stop = new AbortController();
      const onSignal = () => stop.abort();
      // Not once(): the listener must stay while the bench cleans up. execa
      // (signal-exit) re-raises a signal that no other listener is left to
      // handle, which killed the bench before it could tear anything down.
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        const run = await runBench({
          bpffs: globals().bpffs,
          scenarios: selectScenarios(opts.scenario),
          rounds: opts.rounds ?? (opts.quick ? 1 : 3),
          seconds,
          ...(opts.cpus === 'all' ? {} : { cpus: opts.cpus }),
          signal: stop.signal,
          progress: (line) => process.stderr.write(`bench: ${line}\n`),
        });
        const report = summarize(run);
        const files = await writeReport(report, path.resolve(opts.out));
        if (!opts.json) print(`${formatReport(report)}\n\nwritten: ${files.json}\n         ${files.chart}`);
        // Under --json the report goes out with the error, as one document.
        if (report.missing.length) {
          throw new AccelError(ErrorCodes.BENCH_INCOMPLETE, `no figure for ${report.missing.join(', ')} (see the warnings above)`, { result: { ...report, files } });
        }
        if (opts.json) printJson({ ...report, files });
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });
}
