import { type Command, Option } from 'commander';
import { reconcileTo } from '../../attachment/reconcile.js';
import { parseSpec } from '../../attachment/spec.js';
import { attachmentStatus } from '../../attachment/status.js';
import { parseInterceptRule } from '../../net/rules.js';
import { INTERCEPT_DEFAULTS } from '../../intercept/settings.js';
import { AccelError, ErrorCodes } from '../../errors.js';
import { DEFAULT_MAX_SOCKETS, DEFAULT_QUEUE_LIMIT } from '../../fastpath/objects.js';
import { ACCEPT_UNSAFE_HOST_WIDE } from '../../fastpath/install.js';
import { hostWideScope, isHostWide } from '../../cgroup/cgroup.js';
import { type GlobalOptions, parseCount, parseMark, parsePort, parseSinglePort, parseNonNegative, collect } from '../options.js';
import { print, printJson, table } from '../output.js';
import { readerSafetyUnknownLine, unsafeReaderLines } from '../readers.js';

interface AttachCliOptions {
  cgroup: string;
  skipSelftest: boolean;
  acceptUnsafeReadersHostWide: boolean;
  bypassPort: number[];
  queueLimit: number;
  maxSockets: number;
  streamVerdict: 'auto' | 'always';
  json: boolean;
  iface: string[];
  intercept: string[];
  proxyPort?: number;
  interceptMark: number;
  proxyMark: number;
  table: number;
  rulePriority: number;
  maxFlows: number;
  proxyPid?: number;
  interceptUdp: 'pass' | 'refuse';
}

export function registerAttach(program: Command, globals: () => GlobalOptions): void {
  program
    .command('attach')
    .description(
      'accelerate TCP between local processes of a cgroup v2 (sockops + sk_msg), after a self-test of this kernel; with --intercept, also steer its outbound connections to a local transparent proxy (tc + bpf_sk_assign)',
    )
    .requiredOption('--cgroup <path>', 'cgroup v2 directory, e.g. /sys/fs/cgroup/myservice')
    .option('--skip-selftest', 'attach without first proving the fast path on this kernel', false)
    .option(
      ACCEPT_UNSAFE_HOST_WIDE,
      'on the root cgroup (host-wide): attach although the self-test found reader kinds this kernel breaks (or did not run), for every process',
      false,
    )
    .addOption(
      new Option(
        '--stream-verdict <when>',
        'attach the stream verdict (SK_SKB: readiness on kernels whose sk_msg-only sockets miss wake-ups, and the cut of repeated bytes): when the plain setup fails its self-test, or always',
      )
        .choices(['auto', 'always'])
        .default('auto'),
    )
    .option('--bypass-port <port>', 'keep connections on this port off the fast path (repeatable), e.g. for splice(2) readers', parsePort, [])
    .option(
      '--queue-limit <bytes>',
      'bytes a fast-path socket may hold unread before its writer is held back (sent the TCP way until the reader catches up)',
      parseCount(0x7fffffff),
      DEFAULT_QUEUE_LIMIT,
    )
    .option(
      '--max-sockets <n>',
      'sockets the fast path may hold at once (both ends of a connection count); more connections keep the normal path',
      parseCount(1 << 24),
      DEFAULT_MAX_SOCKETS,
    )
    .option('--iface <name>', 'interception: interface the cgroup connects out through (repeatable)', collect, [])
    .option('--intercept <rule>', 'interception: destination CIDR:PORT, CIDR:PORT-PORT or CIDR:* to steer to the proxy (repeatable; IPv6 as [fd00::/64]:80)', collect, [])
    .option('--proxy-port <port>', 'interception: port the proxy listens on at 127.0.0.1 and [::1]', parseSinglePort)
    .option('--intercept-mark <mark>', 'interception: packet mark of steered packets', parseMark, INTERCEPT_DEFAULTS.interceptMark)
    .option('--proxy-mark <mark>', "interception: SO_MARK of the proxy's upstream connections (never steered)", parseMark, INTERCEPT_DEFAULTS.proxyMark)
    .option('--table <n>', 'interception: routing table for the local route', parseNonNegative, INTERCEPT_DEFAULTS.table)
    .option('--rule-priority <n>', 'interception: priority of the ip rule and of the tc filters', parseNonNegative, INTERCEPT_DEFAULTS.priority)
    .option(
      '--max-flows <n>',
      'interception: connections steered to the proxy at once; a new one beyond it is refused (its SYN dropped), never a live one broken',
      parseCount(1 << 24),
      INTERCEPT_DEFAULTS.maxFlows,
    )
    .option(
      '--proxy-pid <pid>',
      "interception: a transparent proxy that is not accel's (HAProxy, Envoy): its listening sockets on --proxy-port are registered as the proxy's",
      parseCount(0x7fffffff),
    )
    .addOption(
      new Option('--intercept-udp <what>', 'interception: UDP of the cgroup to covered destinations: refuse (sendmsg fails; QUIC falls back to TCP) or pass (not policed)')
        .choices(['pass', 'refuse'])
        .default(INTERCEPT_DEFAULTS.udp),
    )
    .option('--json', 'print the result as JSON', false)
    .addHelpText(
      'after',
      '\nExamples:\n  accel attach --cgroup /sys/fs/cgroup/myservice --bypass-port 8443\n  accel attach --cgroup /sys/fs/cgroup    # host-wide: the root cgroup, every process\n  accel attach --cgroup /sys/fs/cgroup/myservice --iface eth0 --intercept 10.200.0.0/24:8080 --proxy-port 15001',
    )
    .action(async (opts: AttachCliOptions) => {
      const g = globals();
      const intercepting = opts.intercept.length > 0 || opts.iface.length > 0 || opts.proxyPort !== undefined;
      if (intercepting && (!opts.intercept.length || !opts.iface.length || opts.proxyPort === undefined)) {
        // Rules are parsed first: a bad rule is named before a missing option.
        opts.intercept.forEach(parseInterceptRule);
        throw new AccelError(ErrorCodes.USAGE, 'interception needs --iface, --intercept and --proxy-port together');
      }
      const spec = parseSpec({
        cgroup: opts.cgroup,
        fastPath: {
          bypassPorts: opts.bypassPort,
          queueLimit: opts.queueLimit,
          maxSockets: opts.maxSockets,
          streamVerdict: opts.streamVerdict,
          selftest: !opts.skipSelftest,
          acceptUnsafeReadersHostWide: opts.acceptUnsafeReadersHostWide,
        },
        intercept: intercepting
          ? {
              ifaces: opts.iface,
              rules: opts.intercept,
              proxyPort: opts.proxyPort,
              interceptMark: opts.interceptMark,
              proxyMark: opts.proxyMark,
              table: opts.table,
              priority: opts.rulePriority,
              maxFlows: opts.maxFlows,
              proxyPid: opts.proxyPid ?? null,
              udp: opts.interceptUdp,
            }
          : null,
      });
      const r = await reconcileTo(spec, { bpffs: g.bpffs, bpfDir: g.bpfDir });
      const kinds = r.plan.steps.map((s) => s.kind);
      const alreadyAttached = !kinds.includes('install-fastpath');
      const upgrade = r.plan.steps.find((s) => s.kind === 'upgrade-fastpath');
      const upgraded = upgrade?.kind === 'upgrade-fastpath' ? { from: upgrade.from, to: upgrade.to } : null;
      const upgradeIc = r.plan.steps.find((s) => s.kind === 'upgrade-intercept');
      const interceptUpgraded = upgradeIc?.kind === 'upgrade-intercept' ? { from: upgradeIc.from, to: upgradeIc.to } : null;
      const status = await attachmentStatus(g.bpffs, r.cgroup.id);
      const withStreamVerdict = r.withStreamVerdict ?? status?.withStreamVerdict ?? false;
      const intercept = status?.intercept
        ? { settings: status.intercept.settings, hookMode: status.intercept.hookMode, alreadyAttached: !kinds.includes('install-intercept') }
        : null;
      // Said once, when the root is attached: what it covers.
      const covers = isHostWide(r.cgroup) ? hostWideScope() : null;
      if (opts.json) {
        return printJson({
          cgroup: r.cgroup,
          hostWide: covers !== null,
          covers,
          pinDir: r.pinDir,
          alreadyAttached,
          upgraded,
          interceptUpgraded,
          recovered: r.recovered,
          withStreamVerdict,
          selftest: r.selftest,
          listenersAdopted: r.listenersAdopted,
          steps: kinds,
          notes: r.plan.notes,
          intercept,
          readerSafety: status?.readerSafety ?? null,
          unsafeReaders: status?.unsafeReaders ?? [],
        });
      }
      print(
        upgraded
          ? `upgraded in place: ${r.cgroup.path} (programs of build ${upgraded.from ?? '(unrecorded)'} replaced by build ${upgraded.to}, maps kept)`
          : alreadyAttached
            ? `already attached: ${r.cgroup.path}`
            : `attached: ${r.cgroup.path}`,
      );
      if (interceptUpgraded) {
        print(`interception upgraded in place: programs of build ${interceptUpgraded.from ?? '(unrecorded)'} replaced by build ${interceptUpgraded.to} on every hook, maps kept`);
      }
      if (covers && !alreadyAttached) print(`host-wide: ${r.cgroup.path} is the root cgroup; the fast path covers ${covers}`);
      print(
        table([
          ['pins', r.pinDir],
          ['setup', withStreamVerdict ? 'sk_msg + stream verdict' : 'sk_msg'],
          ['steps', kinds.join(', ') || 'none: already as asked'],
          ['listeners adopted', String(r.listenersAdopted)],
          [
            'self-test',
            r.selftest.length
              ? r.selftest.map((s) => `${s.withStreamVerdict ? 'with stream verdict' : 'plain'}: ${s.ok ? 'passed' : 'failed'}`).join(', ')
              : alreadyAttached
                ? 'not needed'
                : 'skipped',
          ],
          ...(r.recovered ? ([['recovered', r.recovered]] as [string, string][]) : []),
          ...(intercept
            ? ([
                ['intercept', intercept.settings.rules.map((x) => x.text).join(', ')],
                ['interfaces', intercept.settings.ifaces.join(', ')],
                ['proxy port', String(intercept.settings.proxyPort)],
                ['max flows', String(intercept.settings.maxFlows)],
                ['hooks', intercept.hookMode],
              ] as [string, string][])
            : []),
        ]),
      );
      for (const n of r.plan.notes) print(`note: ${n}`);
      // The reader kinds this kernel breaks, from the attachment's record
      // (also when it was attached before); other warnings after them.
      if (status) for (const line of [...unsafeReaderLines(status.unsafeReaders), ...readerSafetyUnknownLine(status)]) print(line);
      const warnings = r.selftest.flatMap((s) => s.checks.filter((c) => !c.ok && c.severity === 'warning' && !c.readerKind));
      if (warnings.length) print(`note: known kernel defect seen in the self-test: ${warnings[0]?.error} (see docs/kernel-notes.md)`);
    });
}
