// accel proxy --workers: intercepted connections spread over the workers'
// SO_REUSEPORT listeners through the one registered socket, every byte
// arrives, and a worker that dies takes only its own connections with it.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { run, spawn } from '../../src/proc/run.js';
import { CLI, stopProcess, testCgroup, waitFor } from '../helpers/env.js';
import { kernelLacks } from '../helpers/features.js';
import { ECHO_PORT, FIXTURES, type InterceptBench, SERVER4, SERVER6, interceptBench, nodeClient } from '../helpers/intercept.js';

interface Paced {
  port: number | null;
  ok: boolean;
  sent: number;
  received: number;
  error?: string;
}

function paced(b: InterceptBench, host: string, count: number, seconds: number): Promise<Paced[]> {
  return run(process.execPath, [path.join(FIXTURES, 'paced-echo-client.mjs'), host, String(ECHO_PORT), String(count), String(seconds)], {
    ...b.appWhere,
    allowFailure: true,
    timeoutMs: 60_000,
  }).then((r) => JSON.parse(r.stdout.trim().split('\n').pop() ?? '[]') as Paced[]);
}

/** The workers' pids, from the proxy's readiness line. */
function workerPids(b: InterceptBench): number[] {
  const line = b.proxy?.lines().find((l) => l.includes('"event":"listening"')) ?? '{}';
  return (JSON.parse(line) as { workers?: number[] }).workers ?? [];
}

const sourcePort = (source: string) => Number(source.slice(source.lastIndexOf(':') + 1));

describe('accel proxy --workers', { skip: kernelLacks('intercept') }, () => {
  // A SO_REUSEPORT socket would join any group already on the port and take
  // a share of its connections: a port anything holds is refused, as it is
  // for one worker.
  const holders: [string, string][] = [
    ['a SO_REUSEPORT listener of another program holds, instead of joining its group', 's.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEPORT,1)\n'],
    ['a plain listener of another program holds', ''],
  ];
  for (const [what, option] of holders) {
    it(`refuses a port that ${what}`, async (t) => {
      const holder = spawn('python3', [
        '-c',
        `import socket,time\ns=socket.socket()\n${option}s.bind(("127.0.0.1",0))\ns.listen()\nprint(s.getsockname()[1],flush=True)\ntime.sleep(120)`,
      ]);
      t.after(() => stopProcess(holder));
      const port = Number(await holder.waitForLine((l) => /^\d+$/.test(l)));
      assert.ok(port > 0, 'the other program listens');
      // In a cgroup of its own: the proxy attaches its sock_create program to its cgroup.
      const cg = testCgroup(t, 'accel-test-workers');
      const r = await run(process.execPath, [CLI, 'proxy', '--workers', '2', '--no-splice', '--port', String(port)], {
        cgroupProcs: cg.procs,
        allowFailure: true,
        timeoutMs: 30_000,
      });
      assert.equal(r.exitCode, 3, `refused, not serving: ${r.stdout} ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is already in use.*\\[E_ADDRESS_IN_USE\\]`));
    });
  }

  it('serves intercepted connections from more than one worker, every byte arriving (IPv4, IPv6)', async (t) => {
    const b = await interceptBench(t, { proxyArgs: ['--workers', '2', '--no-splice'] });
    assert.equal(workerPids(b).length, 2);
    for (const host of [SERVER4, SERVER6]) {
      const r = await paced(b, host, 16, 1);
      assert.equal(r.length, 16);
      for (const c of r) assert.ok(c.ok, `${host} port ${c.port}: ${c.error ?? ''} sent ${c.sent}, received ${c.received}`);
    }
    for (const host of [SERVER4, SERVER6]) assert.ok((await nodeClient(b, host, ECHO_PORT, 4 << 20)).ok, `${host}: 4 MB byte-exact`);
    const served = new Set(b.proxyEvents().map((e) => e.worker));
    assert.deepEqual([...served].sort(), [0, 1], 'both workers served connections');
    // SIGTERM: every worker stops, and the final counters add up theirs.
    const pids = workerPids(b);
    const proxy = b.proxy;
    await b.stopProxy('SIGTERM');
    const done = await proxy?.done;
    assert.equal(done?.exitCode, 0);
    const stopped = JSON.parse(done?.stdout.split('\n').find((l) => l.includes('"event":"stopped"')) ?? '{}') as { stats?: { accepted: number; allowed: number } };
    assert.equal(stopped.stats?.accepted, 2 * 16 + 2, 'every connection counted once');
    assert.equal(stopped.stats?.allowed, 2 * 16 + 2);
    for (const pid of pids) assert.throws(() => process.kill(pid, 0), `worker ${pid} is gone`);
  });

  // Worker 0's socket is the registered one: killing it also moves the
  // registration, or new connections would be refused.
  it('a worker killed with SIGKILL takes only its own connections; the others finish, and a new worker takes its place', async (t) => {
    const b = await interceptBench(t, { proxyArgs: ['--workers', '2', '--no-splice'] });
    const [killed] = workerPids(b);
    assert.ok(killed);
    // Long enough that the kill comes while they run, however long the 16
    // accepts take on a busy machine (up to the 10 s wait below).
    const transfers = paced(b, SERVER4, 16, 12);
    // Every connection is with a worker before one dies.
    assert.ok(await waitFor(() => b.proxyEvents().length >= 16, 10_000), 'all 16 accepted');
    const byPort = new Map(b.proxyEvents().map((e) => [sourcePort(e.source), e.worker]));
    process.kill(killed, 'SIGKILL');
    const r = await transfers;
    const onKilled = r.filter((c) => byPort.get(c.port ?? -1) === 0);
    const onOther = r.filter((c) => byPort.get(c.port ?? -1) === 1);
    assert.equal(onKilled.length + onOther.length, 16, 'each connection is known to one worker');
    assert.ok(onKilled.length > 0 && onOther.length > 0, `both workers had connections (${onKilled.length}, ${onOther.length})`);
    for (const c of onOther) assert.ok(c.ok, `port ${c.port} on the surviving worker: ${c.error ?? ''} sent ${c.sent}, received ${c.received}`);
    for (const c of onKilled) assert.equal(c.ok, false, `port ${c.port} was the killed worker's`);
    // A replacement starts; new connections work all along.
    for (let i = 0; i < 8; i++) assert.ok((await nodeClient(b, SERVER4, ECHO_PORT, 64 * 1024)).ok, `connection ${i} after the kill`);
    assert.ok(await waitFor(() => (b.proxy?.lines() ?? []).some((l) => l.includes('starting another')), 10_000), 'the supervisor replaced the worker');
    await b.stopProxy('SIGTERM');
  });
});
