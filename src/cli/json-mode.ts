/**
 * Whether the command line asked for --json, for the exit handler: errors
 * are then a JSON object on stdout instead of a line on stderr. A usage
 * error stops commander before it has finished parsing (`--drain-ms x
 * --json` fails at --drain-ms), so the raw arguments are read here; once a
 * command's action runs, its parsed options are the answer (see main.ts).
 */
import type { Command } from 'commander';

/** The subcommand named on the command line and where, skipping the
 * program's own options and their values; null if there is none. */
export function findCommand(program: Command, args: string[]): { command: Command; at: number } | null {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === '--') return null;
    if (arg.startsWith('-')) {
      // `--bpffs DIR` takes the next argument; `--bpffs=DIR` does not.
      const option = program.options.find((o) => o.long === arg || o.short === arg);
      if (option?.required) i++;
      continue;
    }
    const command = program.commands.find((c) => c.name() === arg || c.aliases().includes(arg));
    return command ? { command, at: i } : null;
  }
  return null;
}

/** True when the subcommand takes --json and it was given (before any `--`). */
export function asksForJson(program: Command, args: string[]): boolean {
  const found = findCommand(program, args);
  if (!found || !found.command.options.some((o) => o.long === '--json')) return false;
  const rest = args.slice(found.at + 1);
  const end = rest.indexOf('--');
  return (end < 0 ? rest : rest.slice(0, end)).includes('--json');
}
