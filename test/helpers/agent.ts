// accel agent as a node runs it, for the agent's integration tests: its own
// process reading a config file, and a test-owned cgroup tree (a child
// cgroup of this test) to lay the kubelet's or systemd's cgroups out in.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { ownedRecordPath } from '../../src/agent/owned.js';
import { cgroup2Root, createChildCgroup, removeCgroup } from '../../src/cgroup/cgroup.js';
import { observeFastPath } from '../../src/fastpath/pins.js';
import { attachmentPinDir } from '../../src/paths.js';
import { type Placement, spawn, type Spawned } from '../../src/proc/run.js';
import { BPFFS, CLI, accel, stopProcess, waitFor } from './env.js';

export interface Cg {
  path: string;
  id: bigint;
  procs: string;
  /** Its path below the tree's root, as the agent names it. */
  rel: string;
}

/** A pod UID, numbered; and its form in the systemd driver's names. */
export const uid = (n: number) => `7a1b2c3d-0000-4000-8000-${String(n).padStart(12, '0')}`;
export const sd = (u: string) => u.replace(/-/g, '_');

/** Agents still running. */
const running = new Set<Spawned>();

/** A test-owned cgroup tree; everything in it is detached and removed at the end. */
export function testTree(t: TestContext) {
  const root = createChildCgroup(cgroup2Root(), 'accel-agent-test');
  const made: Cg[] = [];
  const mk = (rel: string): Cg => {
    fs.mkdirSync(path.join(root.path, rel), { recursive: true });
    const p = path.join(root.path, rel);
    const cg = { path: p, id: fs.statSync(p, { bigint: true }).ino, procs: path.join(p, 'cgroup.procs'), rel };
    made.push(cg);
    return cg;
  };
  t.after(async () => {
    // Agents first: a running agent would attach again what is detached here.
    await Promise.all([...running].map((p) => stopProcess(p)));
    for (const cg of made) {
      if (fs.existsSync(attachmentPinDir(BPFFS, cg.id))) await accel(['detach', '--cgroup-id', String(cg.id), '--drain-ms', '0']);
    }
    fs.rmSync(ownedRecordPath(), { force: true });
    // Deepest first.
    const dirs: string[] = [];
    const walk = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name));
      dirs.push(d);
    };
    if (fs.existsSync(root.path)) walk(root.path);
    for (const d of dirs) await removeCgroup({ path: d, id: 0n });
  });
  return { root: root.path, mk };
}

export interface Agent {
  proc: Spawned;
  metrics: string;
  /** The first event line that matches, waiting for it. */
  event(match: (e: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  events(): Record<string, unknown>[];
}

/** Stop every agent still running (before what they attached is detached). */
export async function stopAgents(): Promise<void> {
  await Promise.all([...running].map((p) => stopProcess(p)));
}

/** `where`: where the agent runs (e.g. the network namespace of an interception). */
export async function startAgent(
  t: TestContext,
  config: string,
  extra: string[] = [],
  globals: string[] = [],
  env?: Record<string, string>,
  where: Placement = {},
): Promise<Agent> {
  const proc = spawn(process.execPath, [CLI, ...globals, 'agent', '--config', config, '--metrics-addr', '127.0.0.1:0', ...extra], {
    watchStderr: false,
    ...(env ? { env } : {}),
    ...where,
  });
  running.add(proc);
  void proc.done.then(() => running.delete(proc));
  t.after(() => stopProcess(proc));
  const events = () =>
    proc
      .lines()
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const listening = await proc.waitForLine((l) => l.includes('"event":"listening"'));
  if (!listening) throw new Error(`the agent did not start: ${(await proc.done).stderr}`);
  return {
    proc,
    metrics: (JSON.parse(listening) as { metrics: string }).metrics,
    events,
    event: async (match, timeoutMs = 20_000) => {
      let found: Record<string, unknown> | undefined;
      const ok = await waitFor(() => (found = events().find(match)) !== undefined, timeoutMs);
      assert.ok(
        ok && found,
        `no such event; the agent said:\n${events()
          .map((e) => JSON.stringify(e))
          .join('\n')}`,
      );
      return found;
    },
  };
}

/** The fast path's link id of an attached cgroup, or null. */
export const linkId = (cg: Cg) => {
  const o = observeFastPath(attachmentPinDir(BPFFS, cg.id), cg.id);
  return o.kind === 'complete' ? o.linkId : null;
};

export function tmpDir(t: TestContext): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-agent-'));
  t.after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}
