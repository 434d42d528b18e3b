// Bounded resources of accel echo, relay and proxy: --max-connections
// resets the connection past the maximum and counts it while the others
// keep working; --idle-timeout-ms closes a silent connection and spares a
// busy one, also when its bytes move only in the kernel (spliced).
import assert from 'node:assert/strict';
import path from 'node:path';
import { type TestContext, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { listSpliceDirs, withSpliceMaps } from '../../src/splice/objects.js';
import { type Placement, type Spawned, run, spawn } from '../../src/proc/run.js';
import { BPFFS, CLI, removeStaleSplicePins, stopProcess } from '../helpers/env.js';
import { ECHO_PORT, FIXTURES, SERVER4, interceptBench } from '../helpers/intercept.js';

interface LimitResult {
  ok: boolean;
  taken: number;
  extra: { closed: boolean; error: string | null; received: number };
  error?: string;
}

interface IdleResult {
  ok: boolean;
  quietClosedAfterMs: number | null;
  busyTicks: number;
  busyError: string | null;
  error?: string;
}

const IDLE_MS = 1000;
/** How long the busy connection talks: several idle timeouts. */
const BUSY_MS = 3500;

async function clients<T>(where: Placement, host: string, port: number, kind: 'echo' | 'relay', mode: 'limit' | 'idle', n: number): Promise<T> {
  const r = await run(process.execPath, [path.join(FIXTURES, 'bounded-clients.mjs'), host, String(port), kind, mode, String(n)], {
    ...where,
    allowFailure: true,
    timeoutMs: 60_000,
  });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return (line.startsWith('{') ? JSON.parse(line) : { ok: false, error: r.stderr || `exit ${r.exitCode}` }) as T;
}

/** SIGTERM, then the stats of its {"event":"stopped"} line. */
async function stoppedStats(p: Spawned): Promise<Record<string, number>> {
  p.kill('SIGTERM');
  const done = await p.done;
  const line = done.stdout.split('\n').find((l) => l.includes('"event":"stopped"'));
  assert.ok(line, `no stopped line: ${done.stdout} ${done.stderr}`);
  return (JSON.parse(line) as { stats: Record<string, number> }).stats;
}

function bytesRedirected(pid: number): bigint {
  const dir = listSpliceDirs(BPFFS).find((d) => d.pid === pid);
  assert.ok(dir, `splice pins of pid ${pid}`);
  return withSpliceMaps(dir.dir, (m) => m.counters().bytes_redirected);
}

/** The silent connection went after the timeout, not before, and not long
 * after: the timeout plus a sweep period (a quarter of it), and room for a
 * busy machine's scheduling; the busy one lasted all its lines. */
function assertIdle(r: IdleResult): void {
  assert.ok(r.ok, JSON.stringify(r));
  assert.ok(r.quietClosedAfterMs !== null && r.quietClosedAfterMs >= IDLE_MS - 50 && r.quietClosedAfterMs <= IDLE_MS * 3, `silent one closed after ${r.quietClosedAfterMs} ms`);
  assert.ok(r.busyTicks >= 30, `the busy one exchanged ${r.busyTicks} lines`);
}

function assertRefused(r: LimitResult, taken: number): void {
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(r.taken, taken);
  assert.deepEqual(r.extra, { closed: true, error: 'ECONNRESET', received: 0 });
}

describe('accel echo and relay: --max-connections and --idle-timeout-ms', () => {
  function startServer(t: TestContext, kind: 'echo' | 'relay', port: number, extra: string[]): Spawned {
    const p = spawn(process.execPath, [CLI, kind, '--port', String(port), '--grace-ms', '200', ...extra], { watchStderr: true });
    t.after(async () => {
      await stopProcess(p);
      removeStaleSplicePins();
    });
    return p;
  }

  it('echo: the connection past the maximum is reset and counted, the others keep working', async (t) => {
    const port = 17101;
    const p = startServer(t, 'echo', port, ['--max-connections', '3']);
    assert.ok(await p.waitForLine((l) => l.includes('"event":"listening"')));
    assertRefused(await clients<LimitResult>({}, '127.0.0.1', port, 'echo', 'limit', 3), 3);
    assert.ok(
      p.lines().some((l) => /3 connections open, the maximum \(--max-connections\): refusing new ones/.test(l)),
      'logged',
    );
    const stats = await stoppedStats(p);
    assert.equal(stats.refused, 1);
    assert.equal(stats.accepted, 3);
  });

  it('echo: a silent connection is closed after the timeout, a busy spliced one is not', async (t) => {
    const port = 17102;
    const p = startServer(t, 'echo', port, ['--idle-timeout-ms', String(IDLE_MS)]);
    assert.ok(await p.waitForLine((l) => l.includes('"event":"listening"')));
    const r = await clients<IdleResult>({}, '::1', port, 'echo', 'idle', BUSY_MS);
    assertIdle(r);
    // The busy connection's lines came back through the kernel: node saw none of them.
    assert.ok(bytesRedirected(p.pid) >= BigInt(r.busyTicks * 7), `bytes echoed in the kernel: ${bytesRedirected(p.pid)}`);
    const stats = await stoppedStats(p);
    assert.equal(stats.idleClosed, 1);
    assert.equal(stats.refused, 0);
  });

  it('relay: the client past the maximum is reset and counted, the pairs keep working', async (t) => {
    const port = 17103;
    const p = startServer(t, 'relay', port, ['--max-connections', '4']);
    assert.ok(await p.waitForLine((l) => l.includes('"event":"listening"')));
    assertRefused(await clients<LimitResult>({}, '127.0.0.1', port, 'relay', 'limit', 4), 4);
    const stats = await stoppedStats(p);
    assert.equal(stats.refused, 1);
    assert.equal(stats.accepted, 4);
    assert.equal(stats.spliced, 2);
  });

  it('relay: a silent pair is closed after the timeout, a busy one (one way, in the kernel) is not', async (t) => {
    const port = 17104;
    const p = startServer(t, 'relay', port, ['--idle-timeout-ms', String(IDLE_MS)]);
    assert.ok(await p.waitForLine((l) => l.includes('"event":"listening"')));
    const r = await clients<IdleResult>({}, '127.0.0.1', port, 'relay', 'idle', BUSY_MS);
    assertIdle(r);
    assert.ok(bytesRedirected(p.pid) >= BigInt(r.busyTicks * 7), `bytes relayed in the kernel: ${bytesRedirected(p.pid)}`);
    const stats = await stoppedStats(p);
    assert.equal(stats.idleClosed, 1);
  });
});

describe('accel proxy: --max-connections and --idle-timeout-ms', () => {
  for (const mode of ['--splice', '--no-splice']) {
    it(`${mode}: the connection past the maximum is reset and counted; a silent one is closed, a busy one is not`, async (t) => {
      const b = await interceptBench(t, { proxyInCgroup: false, proxyArgs: [mode, '--max-connections', '3', '--idle-timeout-ms', String(IDLE_MS)] });
      const proxy = b.proxy as Spawned;
      assertRefused(await clients<LimitResult>(b.appWhere, SERVER4, ECHO_PORT, 'echo', 'limit', 3), 3);
      // The proxy has let go of those three before the next clients come.
      const established = async () =>
        (await run('ss', ['-Htn', 'state', 'established', `( dport = :${ECHO_PORT} or sport = :${ECHO_PORT} )`], { netns: b.app, allowFailure: true })).stdout.trim();
      let left = await established();
      for (let i = 0; i < 100 && left; i++) {
        await sleep(50);
        left = await established();
      }
      assert.equal(left, '', 'connections still open');
      const r = await clients<IdleResult>(b.appWhere, SERVER4, ECHO_PORT, 'echo', 'idle', BUSY_MS);
      assertIdle(r);
      const ev = proxy.lines().filter((l) => l.includes('"event":"connection"'));
      const want = mode === '--splice' ? 'splice' : 'relay';
      assert.ok(ev.length >= 5 && ev.every((l) => l.includes(`"mode":"${want}"`)), ev.join('\n'));
      await b.stopProxy();
      const stats = JSON.parse(proxy.lines().find((l) => l.includes('"event":"stopped"')) ?? '{}') as { stats?: Record<string, number> };
      assert.equal(stats.stats?.refused, 1);
      assert.equal(stats.stats?.idleClosed, 1);
      assert.equal(stats.stats?.accepted, 5);
    });
  }
});
