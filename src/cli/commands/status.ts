import type { Command } from 'commander';
import { type AttachmentStatus, collectStatus } from '../../attachment/status.js';
import { COUNTERS } from '../../maps/layout/fastpath.js';
import { SPLICE_COUNTERS } from '../../maps/layout/splice.js';
import { TPROXY_COUNTERS } from '../../maps/layout/tproxy.js';
import { type SpliceStatus, spliceStatus } from '../../splice/objects.js';
import type { GlobalOptions } from '../options.js';
import { print, printJson, table } from '../output.js';
import { readerSafetyUnknownLine, unsafeReaderLines } from '../readers.js';

export function formatStatus(s: AttachmentStatus): string {
  const rows: [string, string | number | bigint][] = [
    ['state', s.state === 'complete' ? 'attached' : `incomplete (${s.reason}); run attach or detach to recover`],
    ...(s.interrupted
      ? ([['interrupted', `${s.interrupted.operation} by pid ${s.interrupted.pid} during ${s.interrupted.steps[s.interrupted.current] ?? 'its start'}`]] as [string, string][])
      : []),
    ['pins', s.pinDir],
    ['cgroup link', s.linkId === null ? '-' : `id ${s.linkId} (${s.linkPin})`],
    ...Object.entries(s.programIds).map(([name, id]) => [name.replace(/^prog_/, 'program '), `id ${id}`] as [string, string]),
    ['setup', s.withStreamVerdict ? 'sk_msg + stream verdict' : 'sk_msg'],
    [
      'build',
      s.build
        ? `${s.build.buildId}, ${s.build.how === 'upgraded' ? `upgraded in place from ${s.build.from ?? 'an unrecorded build'}` : 'installed'} at ${s.build.at}`
        : 'not recorded',
    ],
    ['redirect', s.redirectEnabled ? 'on' : 'off'],
    ['queue limit', s.queueLimit === null ? '-' : `${s.queueLimit} bytes unread per socket, then the writer is held back`],
    ['max sockets', s.maxSockets ?? '-'],
    ['sockets in map', s.socketsInMap],
    ['members', s.members],
    ['listeners', s.listeners],
    ['bypass ports', s.bypassPorts.length ? s.bypassPorts.join(', ') : '-'],
  ];
  const counters = s.counters
    ? table(
        COUNTERS.map((c) => [c, s.counters?.[c] ?? 0n]),
        '    ',
      )
    : '    -';
  const readers = [...unsafeReaderLines(s.unsafeReaders, '  '), ...readerSafetyUnknownLine(s, '  ')].map((l) => `\n${l}`).join('');
  let text = `${s.cgroupPath ?? `(cgroup ${s.cgroupId} no longer exists: accel detach --cgroup-id ${s.cgroupId})`}\n${table(rows)}${readers}\n  counters\n${counters}`;
  const ic = s.intercept;
  if (ic) {
    const icRows: [string, string | number | bigint][] = [
      ['state', ic.complete ? 'attached' : 'incomplete; run attach or detach to recover'],
      ['rules', ic.settings.rules.map((r) => r.text).join(', ')],
      ['interfaces', ic.settings.ifaces.join(', ')],
      ['proxy port', ic.settings.proxyPort],
      ['marks', `steered 0x${ic.settings.interceptMark.toString(16)}, proxy 0x${ic.settings.proxyMark.toString(16)}`],
      ['table / priority', `${ic.settings.table} / ${ic.settings.priority}`],
      ['network namespace', `inode ${ic.netns}${ic.inThisNetns ? ' (this one)' : ' (not this one)'}`],
      ['hooks', `${ic.hookMode}${ic.cgroupHooks ? ' + cgroup egress guard' : ''}: ${ic.filtersPresent === null ? 'unknown from here' : ic.filtersPresent ? 'present' : 'MISSING'}`],
      [
        'build',
        ic.build
          ? `${ic.build.buildId}, ${ic.build.how === 'upgraded' ? `upgraded in place from ${ic.build.from ?? 'an unrecorded build'}` : 'installed'} at ${ic.build.at}`
          : 'not recorded',
      ],
      ['udp to covered destinations', ic.settings.udp === 'refuse' ? 'refused' : 'passes (not policed)'],
      [
        'proxy listeners',
        ic.proxyRegistered === null
          ? 'unknown from here'
          : ic.proxyRegistered.length
            ? `registered for ${ic.proxyRegistered.map((f) => `IPv${f}`).join(', ')}`
            : 'none registered: new connections are refused',
      ],
      ['steered flows', `${ic.flows ?? '-'} of at most ${ic.settings.maxFlows ?? '-'}`],
    ];
    const icCounters = ic.counters
      ? table(
          TPROXY_COUNTERS.map((c) => [c, ic.counters?.[c] ?? 0n]),
          '      ',
        )
      : '      -';
    text += `\n  interception\n${table(icRows, '    ')}\n    counters\n${icCounters}`;
  }
  return text;
}

function formatSplice(s: SpliceStatus): string {
  const rows: [string, string | number | bigint][] = [
    ['owner', `${s.owner}, pid ${s.pid}${s.alive ? '' : ' (gone: its next start removes these pins)'}`],
    ['pins', s.dir],
    ['sockets in map', s.socketsInMap],
  ];
  const counters = s.counters
    ? table(
        SPLICE_COUNTERS.map((c) => [c, s.counters?.[c] ?? 0n]),
        '    ',
      )
    : '    -';
  return `splice ${s.owner}\n${table(rows)}\n  counters\n${counters}`;
}

export function registerStatus(program: Command, globals: () => GlobalOptions): void {
  program
    .command('status')
    .description('what is attached where: programs, pins, sockets in the map, counters; interception; splice objects of running proxies, echo and relay servers')
    .option('--cgroup <path>', 'only this cgroup')
    .option('--json', 'print as JSON', false)
    .action(async (opts: { cgroup?: string; json: boolean }) => {
      const all = await collectStatus(globals().bpffs, opts.cgroup);
      const splices = opts.cgroup ? [] : spliceStatus(globals().bpffs);
      if (opts.json) return printJson({ attachments: all, splices });
      const parts = [...all.map(formatStatus), ...splices.map(formatSplice)];
      print(parts.length ? parts.join('\n\n') : 'nothing attached');
    });
}
