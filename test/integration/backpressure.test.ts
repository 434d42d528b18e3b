// A writer whose local reader stops reading must be held back as TCP holds
// it back: bounded kernel memory, then every byte once the reader reads.
// Each case runs the same transfer on plain TCP first (outside any
// attachment), so the bound is checked against what this kernel's TCP
// accepts, in the same run. Without backpressure the fast path accepted the
// whole transfer while the reader slept.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { type TestContext, describe, it } from 'node:test';
import { DEFAULT_QUEUE_LIMIT } from '../../src/fastpath/objects.js';
import { type ProbeSide, runProbe } from '../../src/probe/sockprobe.js';
import { type Placement, type Spawned, run, spawn } from '../../src/proc/run.js';
import type { SpliceCounters } from '../../src/maps/layout/splice.js';
import { listSpliceDirs, withSpliceMaps } from '../../src/splice/objects.js';
import { BPFFS, CLI, MB, accel, attachOk, maps, nothingAttached, removeStaleSplicePins, stopProcess, testCgroup } from '../helpers/env.js';
import { kernelLacks } from '../helpers/features.js';
import { ECHO_PORT, FIXTURES, type InterceptBench, SERVER4, interceptBench } from '../helpers/intercept.js';

const PAUSE = ['--pause-ms', '3000', '--timeout-s', '90'];

async function slowReader(args: string[], cgroupProcs?: string): Promise<ProbeSide> {
  const r = await runProbe(['slowreader', ...args, ...PAUSE], cgroupProcs ? { cgroupProcs } : {}, 120_000);
  assert.ok(r.ok, `${cgroupProcs ? 'fast path' : 'plain TCP'}: ${r.error}`);
  const side = r.sides[0];
  assert.ok(side?.acceptedMax !== undefined && side.acceptedTotal !== undefined);
  return side;
}

/** What the fast path may take beyond plain TCP for one flow: the queue
 * limit plus one message (a send of up to 1 MiB here) in slack. */
const perFlowAllowance = (plain: ProbeSide) => (plain.acceptedMax ?? 0) + DEFAULT_QUEUE_LIMIT + MB;

describe('backpressure on the fast path', () => {
  for (const writer of ['blocking', 'poll', 'epoll'] as const) {
    it(`holds a ${writer} writer back while its reader sleeps, then delivers every byte`, async (t) => {
      const cg = testCgroup(t);
      await attachOk(t, cg);
      const args = ['--writer', writer, '--bytes', String(128 * MB)];
      const plain = await slowReader(args);
      const fast = await slowReader(args, cg.procs);
      t.diagnostic(`accepted while the reader slept: plain TCP ${plain.acceptedMax}, fast path ${fast.acceptedMax} bytes`);
      assert.ok(fast.acceptedMax! <= perFlowAllowance(plain), `fast path accepted ${fast.acceptedMax} bytes, plain TCP ${plain.acceptedMax}`);
      assert.equal(fast.received, 128 * MB);
      if (writer !== 'blocking') assert.ok(fast.writerWaits! > 0, 'the writer saw its socket not writable');
      const c = maps(cg, (m) => m.counters());
      assert.ok(c.backpressure_engaged >= 1n, 'backpressure engaged');
      assert.ok(c.bytes_redirected > 0n, 'the fast path carried bytes too');
      assert.ok(c.bytes_held > 0n && c.bytes_held === c.bytes_passed, `held ${c.bytes_held}, passed ${c.bytes_passed}`);
    });
  }

  it('bounds both directions of many connections at once, in total and in TCP memory', async (t) => {
    const cg = testCgroup(t);
    await attachOk(t, cg);
    const args = ['--conns', '8', '--duplex', '--reader', 'poll', '--bytes', String(32 * MB)];
    const plain = await slowReader(args);
    const fast = await slowReader(args, cg.procs);
    t.diagnostic(`16 flows: plain TCP took ${plain.acceptedTotal} bytes, the fast path ${fast.acceptedTotal} (TCP memory +${fast.tcpMemPagesDelta} pages)`);
    assert.equal(fast.flows, 16);
    assert.ok(fast.acceptedTotal! <= 16 * perFlowAllowance(plain), `fast path took ${fast.acceptedTotal} bytes in all`);
    // The host's TCP memory follows what is queued, not the transfer size.
    assert.ok(fast.tcpMemPagesDelta! * 4096 <= 2 * fast.acceptedTotal! + 16 * MB, `TCP memory grew by ${fast.tcpMemPagesDelta} pages`);
    assert.equal(fast.received, 16 * 32 * MB);
  });

  it('holds a Node.js writer back (write callbacks stop while the reader pauses)', async (t) => {
    const cg = testCgroup(t);
    await attachOk(t, cg);
    const once = async (cgroupProcs?: string) => {
      const r = await run(process.execPath, [path.join(FIXTURES, 'node-slow-reader.mjs'), String(128 * MB), '3000'], {
        ...(cgroupProcs ? { cgroupProcs } : {}),
        allowFailure: true,
        timeoutMs: 90_000,
      });
      const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { ok: boolean; acceptedWhilePaused: number; error?: string };
      assert.ok(out.ok, `${cgroupProcs ? 'fast path' : 'plain TCP'}: ${r.stdout} ${r.stderr}`);
      return out.acceptedWhilePaused;
    };
    const plain = await once();
    const fast = await once(cg.procs);
    t.diagnostic(`Node writer: plain TCP took ${plain} bytes while the reader paused, the fast path ${fast}`);
    assert.ok(fast <= plain + DEFAULT_QUEUE_LIMIT + MB, `fast path took ${fast} bytes, plain TCP ${plain}`);
    assert.ok(maps(cg, (m) => m.counters().backpressure_engaged) >= 1n);
  });

  it('delivers every byte to a Node.js reader that half-closed first, when its writer ends while held', async (t) => {
    // The writer is held (its last bytes go the TCP way behind the redirected
    // ones) and ends while the reader sleeps. The reader's socket is then
    // shut both ways: libuv takes a read shorter than its buffer, with the
    // hang-up, for the end of the stream. Writes of 60,000 B end the
    // redirected bytes off a multiple of the reads, and the held rest is
    // small enough to pass the reader's first TCP window. Node's own 64 KiB
    // reads, and accel proxy's 256 KiB ones.
    const cg = testCgroup(t);
    await attachOk(t, cg);
    const transfer = async (size: number, readBuffer: number) => {
      const r = await run(process.execPath, [path.join(FIXTURES, 'halfclosed-reader.mjs'), String(size), '60000', String(readBuffer)], {
        cgroupProcs: cg.procs,
        allowFailure: true,
        timeoutMs: 90_000,
      });
      assert.ok(r.exitCode === 0, `${size} B, reads of ${readBuffer || 'node'}: ${r.stdout} ${r.stderr}`);
    };
    let runs = 0;
    for (const readBuffer of [0, 256 * 1024]) {
      for (const rest of [1000, 10_000]) {
        await transfer(DEFAULT_QUEUE_LIMIT + rest, readBuffer);
        runs++;
      }
    }
    // Each hold started at a multiple of 256 KiB of redirected bytes, and
    // the rest went the TCP way.
    const c = maps(cg, (m) => m.counters());
    assert.ok(
      c.backpressure_engaged >= BigInt(runs) && c.bytes_held > 0n && c.bytes_held === c.bytes_passed,
      `each writer was held (${c.backpressure_engaged} holds, ${c.bytes_held} bytes held, ${c.bytes_passed} passed)`,
    );
    assert.equal(c.bytes_redirected % 262_144n, 0n, `${c.bytes_redirected} bytes redirected`);
    // A limit that is no multiple of 256 KiB: 60,000 B writes reach it at
    // 3,960,000 B. A hold at the next multiple of 64 KiB (3,997,696 B) would
    // end accel proxy's 256 KiB reads with one of 64 KiB, and the end.
    await attachOk(t, cg, ['--queue-limit', '4000000']);
    await transfer(3_997_696 + 10_000, 256 * 1024);
  });

  it('holds a writer back with the SK_SKB stream verdict attached too', async (t) => {
    const cg = testCgroup(t);
    await attachOk(t, cg, ['--stream-verdict', 'always']);
    const args = ['--writer', 'epoll', '--bytes', String(128 * MB)];
    const plain = await slowReader(args);
    const fast = await slowReader(args, cg.procs);
    assert.ok(fast.acceptedMax! <= perFlowAllowance(plain), `fast path accepted ${fast.acceptedMax} bytes, plain TCP ${plain.acceptedMax}`);
    assert.equal(fast.received, 128 * MB);
    assert.ok(maps(cg, (m) => m.counters().backpressure_engaged) >= 1n);
  });

  it('follows --queue-limit, and a re-attach changes it in place', async (t) => {
    const cg = testCgroup(t);
    await attachOk(t, cg, ['--queue-limit', String(16 * MB)]);
    assert.equal(
      maps(cg, (m) => m.config().queueLimit),
      16 * MB,
    );
    const args = ['--writer', 'epoll', '--bytes', String(64 * MB)];
    const wide = await slowReader(args, cg.procs);
    await attachOk(t, cg, ['--queue-limit', String(MB)]);
    assert.equal(
      maps(cg, (m) => m.config().queueLimit),
      MB,
    );
    const narrow = await slowReader(args, cg.procs);
    t.diagnostic(`accepted with a 16 MiB limit ${wide.acceptedMax}, with 1 MiB ${narrow.acceptedMax}`);
    assert.ok(wide.acceptedMax! >= 16 * MB, `${wide.acceptedMax} bytes under a 16 MiB limit`);
    assert.ok(narrow.acceptedMax! < wide.acceptedMax! - 8 * MB, `${narrow.acceptedMax} bytes under a 1 MiB limit`);
  });

  it('the self-test refuses a fast path that does not hold writers back, and attaches nothing', async (t) => {
    const cg = testCgroup(t);
    const r = await accel(['attach', '--cgroup', cg.path, '--stream-verdict', 'always'], { ACCEL_SELFTEST_QUEUE_LIMIT: String(1 << 30) });
    assert.equal(r.exitCode, 4, r.stderr);
    assert.match(r.stderr, /writer held back while its reader pauses.*\[E_SELFTEST\]/);
    assert.deepEqual(nothingAttached(cg), { programs: [], pinDir: false });
  });
});

/** What TCP autotuning may give one receive buffer, and one send buffer. */
function tcpBufferMax(which: 'rmem' | 'wmem'): number {
  return Number(fs.readFileSync(`/proc/sys/net/ipv4/tcp_${which}`, 'utf8').trim().split(/\s+/)[2]);
}

/**
 * Through a server whose reader of one side stops: the same transfer once
 * through a plain user-space Node.js echo (pipe(), TCP's own bounds), once
 * through accel's. Before holding spliced sockets back, the kernel took the
 * whole transfer (768 MB in 3 s measured) into psock queues that tcp_mem
 * does not see. Now it may take what the user-space server takes plus one
 * more autotuned receive and send buffer (the held socket's queue).
 */
describe('backpressure on the splice path', { skip: kernelLacks('intercept', 'splice') }, () => {
  // Per flow, what TCP itself may hold beyond the user-space server: the
  // held socket's autotuned receive buffer, a send buffer, and the skbs the
  // verdict redirected before its owner held the socket (the owner polls
  // every 2-16 ms); for a single flow, room for one more receive buffer of
  // such arrivals.
  const allowance = (plain: ProbeSide, flows = 1) =>
    (plain.acceptedTotal ?? 0) + flows * (tcpBufferMax('rmem') + tcpBufferMax('wmem') + 4 * MB) + (flows === 1 ? tcpBufferMax('rmem') : 0);

  async function through(port: number, args: string[], where: Placement = {}): Promise<ProbeSide> {
    const r = await runProbe(['slowreader', '--host', '127.0.0.1', '--port', String(port), ...args, ...PAUSE], where, 120_000);
    assert.ok(r.ok, `through port ${port}: ${r.error}`);
    return r.sides[0] as ProbeSide;
  }

  function server(t: TestContext, args: string[]): Spawned {
    const p = spawn(process.execPath, args, { watchStderr: true });
    t.after(async () => {
      await stopProcess(p);
      removeStaleSplicePins();
    });
    return p;
  }

  async function spliceServer(t: TestContext, kind: 'echo' | 'relay', port: number) {
    const p = server(t, [CLI, kind, '--port', String(port), '--grace-ms', '200']);
    assert.ok(await p.waitForLine((l) => l.includes('"listening"')));
    return p;
  }

  async function plainEcho(t: TestContext, port: number) {
    const p = server(t, [path.join(FIXTURES, 'remote-server.mjs'), '--echo', String(port)]);
    assert.ok(await p.waitForLine((l) => l.includes('"listening"')));
  }

  function holds(pid: number): SpliceCounters {
    const dir = listSpliceDirs(BPFFS).find((d) => d.pid === pid);
    assert.ok(dir, `splice pins of pid ${pid}`);
    return withSpliceMaps(dir.dir, (m) => m.counters());
  }

  it('accel echo: a client that does not read is held back, then gets every byte', async (t) => {
    const base = 18300 + (process.pid % 500);
    await plainEcho(t, base);
    const echo = await spliceServer(t, 'echo', base + 1);
    for (const writer of ['blocking', 'epoll']) {
      const args = ['--writer', writer, '--bytes', String(128 * MB)];
      const plain = await through(base, args);
      const spliced = await through(base + 1, args);
      t.diagnostic(
        `${writer}: a user-space echo took ${plain.acceptedMax} bytes from a client that did not read, accel echo ${spliced.acceptedMax} (TCP memory +${spliced.tcpMemPagesDelta} pages)`,
      );
      assert.ok(
        spliced.acceptedMax! <= allowance(plain),
        `accel echo took ${spliced.acceptedMax} bytes; counters ${JSON.stringify(holds(echo.pid), (_k, v) => (typeof v === 'bigint' ? String(v) : v))}`,
      );
      assert.equal(spliced.received, 128 * MB);
    }
    const c = holds(echo.pid);
    assert.ok(c.holds >= 2n && c.releases >= 2n, `holds ${c.holds}, releases ${c.releases}`);
    // A client that half-closes while its echo socket is held leaves that
    // socket unable to return to the verdict (the map takes only
    // established sockets): node relays the rest.
    assert.ok(c.bytes_redirected >= BigInt(128 * MB), `the kernel moved most bytes (${c.bytes_redirected} of ${2 * 128 * MB})`);
  });

  it('accel echo: many clients that do not read are bounded in total', async (t) => {
    const base = 18800 + (process.pid % 500);
    await plainEcho(t, base);
    await spliceServer(t, 'echo', base + 1);
    const args = ['--conns', '4', '--reader', 'poll', '--bytes', String(64 * MB)];
    const plain = await through(base, args);
    const spliced = await through(base + 1, args);
    t.diagnostic(`4 clients: a user-space echo took ${plain.acceptedTotal} bytes, accel echo ${spliced.acceptedTotal}`);
    assert.ok(spliced.acceptedTotal! <= allowance(plain, 4), `accel echo took ${spliced.acceptedTotal} bytes in all`);
    assert.equal(spliced.received, 4 * 64 * MB);
  });

  it('accel relay: each side that does not read holds the other back, both ways at once', async (t) => {
    const port = 19300 + (process.pid % 500);
    const relay = await spliceServer(t, 'relay', port);
    const spliced = await through(port, ['--duplex', '--conns', '2', '--reader', 'poll', '--bytes', String(96 * MB)]);
    t.diagnostic(`2 pairs both ways: accel relay took ${spliced.acceptedTotal} bytes (max ${spliced.acceptedMax} in one direction)`);
    // Per direction: the writer's send buffer, the relay's receive buffer
    // (held) and send buffer, the reader's receive buffer.
    assert.ok(spliced.acceptedMax! <= 2 * (tcpBufferMax('rmem') + tcpBufferMax('wmem')) + 4 * MB, `one direction took ${spliced.acceptedMax} bytes`);
    assert.equal(spliced.received, 4 * 96 * MB);
    assert.ok(holds(relay.pid).holds >= 1n);
  });

  /** Through the proxy to the remote user-space echo, a client that does
   * not read for a while: client, proxy (two sockets), echo server and the
   * client's own receive side hold what it took. */
  async function throughProxy(t: TestContext, splice: boolean): Promise<InterceptBench> {
    const b = await interceptBench(t, { proxyInCgroup: false, proxyArgs: [splice ? '--splice' : '--no-splice'] });
    const r = await runProbe(['slowreader', '--host', SERVER4, '--port', String(ECHO_PORT), '--writer', 'epoll', '--bytes', String(128 * MB), ...PAUSE], b.appWhere, 120_000);
    assert.ok(r.ok, r.error ?? '');
    const side = r.sides[0] as ProbeSide;
    t.diagnostic(`through the ${splice ? 'splicing' : 'relaying'} proxy to a user-space echo: ${side.acceptedMax} bytes taken from a client that did not read`);
    assert.ok(side.acceptedMax! <= 3 * (tcpBufferMax('rmem') + tcpBufferMax('wmem')), `${side.acceptedMax} bytes`);
    assert.equal(side.received, 128 * MB);
    assert.ok(
      b.proxyEvents().every((e) => (e.mode === 'splice') === splice),
      JSON.stringify(b.proxyEvents().map((e) => e.mode)),
    );
    return b;
  }

  it('accel proxy (user-space relay): a client that does not read holds back the upstream', async (t) => {
    await throughProxy(t, false);
  });

  it('accel proxy --splice: a client that does not read holds back the upstream (which then stops reading too)', async (t) => {
    const b = await throughProxy(t, true);
    assert.ok(holds(b.proxy?.pid ?? -1).holds >= 1n, 'the proxy held a socket back');
  });
});
