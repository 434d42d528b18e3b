#!/usr/bin/env node
/** accel: the command line. One module per command; one exit handler. */
import { Command, Option } from 'commander';
import { LOG_LEVELS, type LogLevel, configureLogging } from '../log.js';
import { routeLibbpfLogs } from '../bpf/log.js';
import { hostBpffs } from '../bpf/bpffs.js';
import { log } from '../log.js';
import { registerAgent } from './commands/agent.js';
import { registerAttach } from './commands/attach.js';
import { registerBench } from './commands/bench.js';
import { registerDemo } from './commands/demo.js';
import { registerDetach } from './commands/detach.js';
import { registerEcho } from './commands/echo.js';
import { registerFeatures } from './commands/features.js';
import { registerProxy } from './commands/proxy.js';
import { registerRelay } from './commands/relay.js';
import { registerSelftest } from './commands/selftest.js';
import { registerStatus } from './commands/status.js';
import { registerVerify } from './commands/verify.js';
import { runAndExit } from './exit.js';
import { asksForJson } from './json-mode.js';
import { GLOBAL_DEFAULTS, type GlobalOptions } from './options.js';
import { packageVersion } from './version.js';

const program = new Command('accel')
  .description('transparent sidecar accelerator: local TCP through eBPF sockmap, transparent interception, in-kernel splicing')
  .addOption(new Option('--log-level <level>', 'log level').choices([...LOG_LEVELS]).default('info'))
  .addOption(new Option('--log-format <format>', 'log format').choices(['text', 'json']).default('text'))
  .option('--bpffs <dir>', 'bpffs mount point (mounted if needed)', GLOBAL_DEFAULTS.bpffs)
  .option('--bpf-dir <dir>', 'directory of the compiled BPF objects', GLOBAL_DEFAULTS.bpfDir)
  .version(packageVersion(), '-V, --version', 'print the version of accel')
  // commander reports nothing itself and never exits: its errors reach the
  // one exit handler, which prints them as every other error (one line, or
  // JSON under --json). --help still goes to stdout (writeOut).
  .configureOutput({ writeErr: () => {}, outputError: () => {} })
  .exitOverride();

const globals = () => program.opts<GlobalOptions>();

/** Set once a command's options are parsed: they say whether it was asked
 * for JSON better than the raw arguments (`--cgroup --json` makes "--json"
 * a path). */
let parsedJson: boolean | undefined;

program.hook('preAction', (_program, command) => {
  parsedJson = command.opts().json === true;
  const g = globals();
  configureLogging({ level: g.logLevel as LogLevel, format: g.logFormat });
  // libbpf's own lines (verifier logs included) explain failures that the
  // error line already names: shown from --log-level verbose.
  routeLibbpfLogs((level, message) => log.log(level === 'warn' ? 'verbose' : 'debug', `libbpf: ${message}`));
  // Under ip netns exec (a mount namespace with /sys remounted), the
  // default bpffs is the host's, not a new one only this process sees.
  if (program.getOptionValueSource('bpffs') === 'default') {
    const b = hostBpffs(g.bpffs);
    if (b.note) {
      program.setOptionValue('bpffs', b.dir);
      log.info(b.note);
    }
  }
});

registerAttach(program, globals);
registerDetach(program, globals);
registerStatus(program, globals);
registerVerify(program, globals);
registerSelftest(program, globals);
registerFeatures(program);
registerDemo(program, globals);
registerProxy(program, globals);
registerEcho(program, globals);
registerRelay(program, globals);
registerBench(program, globals);
registerAgent(program, globals);

await runAndExit(
  () => program.parseAsync(process.argv),
  () => parsedJson ?? asksForJson(program, process.argv.slice(2)),
);
