import fs from 'node:fs';
import type { Command } from 'commander';
import { Agent } from '../../agent/agent.js';
import { configJsonSchema, loadAgentConfig } from '../../agent/config.js';
import { serveEndpoints } from '../../agent/http.js';
import { agentMetrics } from '../../agent/metrics.js';
import { AccelError, ErrorCodes } from '../../errors.js';
import { log } from '../../log.js';
import type { GlobalOptions } from '../options.js';
import { print, printJson } from '../output.js';

export const DEFAULT_METRICS_ADDR = '127.0.0.1:9477';

interface AgentCliOptions {
  config?: string;
  metricsAddr: string;
  detachOnExit: boolean;
  check: boolean;
  printSchema: boolean;
}

export function registerAgent(program: Command, globals: () => GlobalOptions): void {
  program
    .command('agent')
    .description(
      'node agent: attach to the cgroups (systemd units, Kubernetes pods) a configuration selects, follow them as they come and go, serve Prometheus metrics; one JSON line per event on stdout',
    )
    .option('--config <file>', 'configuration, YAML or JSON (schema: accel agent --print-schema)')
    .option('--metrics-addr <host:port>', 'where /metrics, /healthz and /readyz are served', DEFAULT_METRICS_ADDR)
    .option('--detach-on-exit', 'on SIGTERM or SIGINT, remove every attachment the agent made (by default they stay, and a restarted agent adopts them)', false)
    .option('--check', 'check the configuration and exit', false)
    .option('--print-schema', 'print the JSON Schema of the configuration and exit', false)
    .addHelpText('after', '\nSIGHUP, or a change of the file, reloads the configuration in place.\n\nExample:\n  accel agent --config /etc/accel/agent.yaml')
    .action(async (opts: AgentCliOptions) => {
      if (opts.printSchema) return printJson(configJsonSchema());
      if (!opts.config) throw new AccelError(ErrorCodes.USAGE, 'agent needs --config <file>');
      const configFile = opts.config;
      if (opts.check) {
        const c = loadAgentConfig(configFile);
        return print(`${configFile}: valid (${c.selections.length} selection${c.selections.length === 1 ? '' : 's'})`);
      }
      const g = globals();
      const agent = new Agent({ configFile, bpffs: g.bpffs, bpfDir: g.bpfDir, emit: (e) => print(JSON.stringify(e)) });
      const metrics = agentMetrics(agent, g.bpffs);
      const startedAt = Date.now();
      const server = await serveEndpoints(opts.metricsAddr, {
        metrics: metrics.registry,
        refresh: metrics.refresh,
        release: metrics.release,
        written: metrics.written,
        ready: () => agent.ready,
        unhealthy: () => {
          const idle = Date.now() - Math.max(agent.stats.lastProgressAt, startedAt);
          return idle > 60_000 ? `the reconcile loop has made no progress for ${Math.round(idle / 1000)} s` : null;
        },
      });
      print(JSON.stringify({ event: 'listening', metrics: server.address, cgroupRoot: agent.cgroupRoot, pid: process.pid }));
      // Not once(): a listener must stay while the agent stops (execa's
      // signal-exit re-raises a signal nobody else handles).
      const onHup = () => agent.reload();
      process.on('SIGHUP', onHup);
      let mtime = fs.statSync(configFile).mtimeMs;
      const onChange = (cur: fs.Stats) => {
        if (cur.mtimeMs === mtime || cur.mtimeMs === 0) return;
        mtime = cur.mtimeMs;
        agent.reload();
      };
      fs.watchFile(configFile, { interval: 1000 }, onChange);
      let onSignal: (signal: NodeJS.Signals) => void = () => {};
      try {
        await agent.start();
        await new Promise<void>((resolve, reject) => {
          let stopping = false;
          onSignal = (signal) => {
            if (stopping) return;
            stopping = true;
            log.info(`${signal}: stopping${opts.detachOnExit ? ', removing every attachment of the agent' : '; attachments stay'}`);
            agent.stop(opts.detachOnExit).then(resolve, reject);
          };
          process.on('SIGTERM', onSignal);
          process.on('SIGINT', onSignal);
        });
      } finally {
        fs.unwatchFile(configFile, onChange);
        process.off('SIGHUP', onHup);
        await server.close();
      }
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      print(JSON.stringify({ event: 'stopped', attachmentsLeft: opts.detachOnExit ? 0 : [...agent.tracked.values()].filter((t) => t.state !== 'failed').length }));
    });
}
