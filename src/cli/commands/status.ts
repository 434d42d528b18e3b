import type { Command } from 'commander';
import { type AttachmentStatus, collectStatus } from '../../fastpath/status.js';
import { COUNTERS } from '../../maps/layout.js';
import type { GlobalOptions } from '../options.js';
import { print, printJson, table } from '../output.js';

export function formatStatus(s: AttachmentStatus): string {
  const rows: [string, string | number | bigint][] = [
    ['state', s.state === 'complete' ? 'attached' : `incomplete (${s.reason}); run attach or detach to recover`],
    ['pins', s.pinDir],
    ['cgroup link', s.linkId === null ? '-' : `id ${s.linkId} (${s.linkPin})`],
    ...Object.entries(s.programIds).map(([name, id]) => [name.replace(/^prog_/, 'program '), `id ${id}`] as [string, string]),
    ['setup', s.withSkskb ? 'sk_msg + SK_SKB readiness workaround' : 'sk_msg'],
    ['redirect', s.redirectEnabled ? 'on' : 'off'],
    ['sockets in map', s.socketsInMap],
    ['members', s.members],
    ['listeners', s.listeners],
    ['bypass ports', s.bypassPorts.length ? s.bypassPorts.join(', ') : '-'],
  ];
  const counters = s.counters ? table(COUNTERS.map((c) => [c, s.counters?.[c] ?? 0n]), '    ') : '    -';
  return `${s.cgroupPath ?? `(cgroup ${s.cgroupId} no longer exists)`}\n${table(rows)}\n  counters\n${counters}`;
}

export function registerStatus(program: Command, globals: () => GlobalOptions): void {
  program
    .command('status')
    .description('what is attached where: programs, pins, sockets in the map, counters')
    .option('--cgroup <path>', 'only this cgroup')
    .option('--json', 'print as JSON', false)
    .action((opts: { cgroup?: string; json: boolean }) => {
      const all = collectStatus(globals().bpffs, opts.cgroup);
      if (opts.json) return printJson({ attachments: all });
      print(all.length ? all.map(formatStatus).join('\n\n') : 'nothing attached');
    });
}
