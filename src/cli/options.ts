/** Options every command shares, and parsers for option values. */
import { InvalidArgumentError } from 'commander';
import { DEFAULT_BPFFS, DEFAULT_BPF_DIR } from '../paths.js';

export interface GlobalOptions {
  logLevel: string;
  logFormat: 'text' | 'json';
  bpffs: string;
  bpfDir: string;
}

export const GLOBAL_DEFAULTS = { bpffs: DEFAULT_BPFFS, bpfDir: DEFAULT_BPF_DIR };

export function parsePort(value: string, previous: number[] = []): number[] {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 65535) throw new InvalidArgumentError(`"${value}" is not a TCP port (1-65535)`);
  return [...previous, n];
}

export function parseCgroupId(value: string): bigint {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`"${value}" is not a cgroup id`);
  return BigInt(value);
}

export function parseNonNegative(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`"${value}" is not a non-negative integer`);
  return n;
}

/** A whole number from 1 to `max`. */
export function parseCount(max: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < 1 || n > max) throw new InvalidArgumentError(`"${value}" is not a whole number from 1 to ${max}`);
    return n;
  };
}

export function parseSinglePort(value: string): number {
  return parsePort(value)[0] as number;
}

/** A packet mark: decimal or 0x-hex, 1..2^32-1. */
export function parseMark(value: string): number {
  const n = /^0x[0-9a-f]{1,8}$/i.test(value) ? parseInt(value, 16) : /^\d+$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 0xffffffff) throw new InvalidArgumentError(`"${value}" is not a packet mark (1-0xffffffff)`);
  return n;
}

/** Repeatable string option. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
