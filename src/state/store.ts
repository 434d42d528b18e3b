/**
 * The one way files in accel's state directory (/run/accel) are read and
 * written: interception records, journals, self-test results, proxy
 * records. Each kind comes with its zod schema, so what is read back is
 * checked, not cast: a file that does not parse, or parses into something
 * else, is E_STATE naming the file (root acts on these files: a record
 * names pins to unlink and values to write to sysctls).
 *
 * A write is atomic and durable: a temporary file with a unique name in
 * the same directory, written and fsynced, renamed over the file, then
 * the directory fsynced. A reader sees the old file or the new one, never
 * a part, and a crash at any point leaves at most a temporary file, which
 * the next write in that directory removes once its writer is dead.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { z } from 'zod';
import { ownedDir } from '../bpf/bpffs.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { failpoint } from '../failpoint.js';
import { processAlive } from '../proc/alive.js';

/** One kind of state file: what it is called in errors, and its schema. */
export interface StateKind<T> {
  name: string;
  schema: z.ZodType<T, z.ZodTypeDef, unknown>;
}

export function stateKind<T>(name: string, schema: z.ZodType<T, z.ZodTypeDef, unknown>): StateKind<T> {
  return { name, schema };
}

/** `.<name>.<pid>.<random>.tmp`: hidden, and never matched by the names
 * the state directory is listed by. */
const TEMP = /^\.(.+)\.(\d+)\.[0-9a-f]+\.tmp$/;

function tempName(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(6).toString('hex')}.tmp`);
}

/** The file, checked against its schema; null if there is none. */
export function readState<T>(file: string, kind: StateKind<T>): T | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new AccelError(ErrorCodes.STATE, `cannot read the ${kind.name} ${file}: ${(err as Error).message}`, { cause: err });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new AccelError(ErrorCodes.STATE, `the ${kind.name} ${file} is not JSON (${(err as Error).message}); remove it if nothing it speaks of is left`, { cause: err });
  }
  const r = kind.schema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new AccelError(
      ErrorCodes.STATE,
      `the ${kind.name} ${file} is not one accel can use: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}; remove it if nothing it speaks of is left`,
    );
  }
  return r.data;
}

/** Write atomically (see above). The directory is made if missing, and
 * must be accel's own (ownedDir). */
export function writeState<T>(file: string, kind: StateKind<T>, value: T): void {
  // Checked on the way out too: what is written can be read back.
  const checked = kind.schema.safeParse(value);
  if (!checked.success) throw new AccelError(ErrorCodes.INTERNAL, `refusing to write an invalid ${kind.name} to ${file}: ${checked.error.issues[0]?.message ?? 'invalid'}`);
  const dir = path.dirname(file);
  ownedDir(dir);
  removeStaleTemps(dir);
  const tmp = tempName(file);
  const fd = fs.openSync(tmp, 'wx', 0o600);
  try {
    try {
      fs.writeSync(fd, `${JSON.stringify(value, null, 2)}\n`);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    failpoint('state-before-rename');
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  syncDir(dir);
}

/** Remove the file (absent is fine), durably. */
export function removeState(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  syncDir(path.dirname(file));
}

function syncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Temporary files whose writer died before its rename. */
export function removeStaleTemps(dir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = TEMP.exec(name);
    if (!m || processAlive(Number(m[2]))) continue;
    fs.rmSync(path.join(dir, name), { force: true });
    removed.push(name);
  }
  return removed;
}
