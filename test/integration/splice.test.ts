// In-kernel splicing: accel proxy --splice through interception (the proxy
// outside the application's cgroup, so its sockets are not on the sk_msg
// fast path), and the kernel-only echo and relay servers.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { processCpuSeconds } from '../../src/bench/measure.js';
import { listSpliceDirs, withSpliceMaps } from '../../src/splice/objects.js';
import { runSplit } from '../../src/probe/sockprobe.js';
import { type Placement, run, spawn } from '../../src/proc/run.js';
import type { SpliceCounters } from '../../src/maps/layout/splice.js';
import { BPFFS, BPF_DIR, CLI, MB, accel, dropPackets, droppedPackets, removeStaleSplicePins, retransmittedSegments, stopProcess, testNetns, waitFor } from '../helpers/env.js';
import { kernelLacks } from '../helpers/features.js';
import { ECHO_PORT, FIXTURES, HTTP_PORT, PROBE_PORT, SERVER4, SERVER6, curl, interceptBench, nodeClient } from '../helpers/intercept.js';

function spliceOf(pid: number): { counters: SpliceCounters; sockets: number; tracked: number } {
  const dir = listSpliceDirs(BPFFS).find((d) => d.pid === pid);
  assert.ok(dir, `splice pins of pid ${pid}`);
  return withSpliceMaps(dir.dir, (m) => ({ counters: m.counters(), sockets: m.socketCount() + m.activeCount(), tracked: m.trackedCount() }));
}

/** `total` echo clients, `concurrency` at once. With `whenOpen`, the first
 * `concurrency` wait, all open, until it resolves, and then send at once. */
async function manyClients(where: Placement, host: string, port: number, total: number, concurrency: number, size: number, whenOpen?: () => Promise<void>) {
  const dir = whenOpen ? fs.mkdtempSync(path.join(os.tmpdir(), 'accel-many-')) : null;
  const go = dir ? path.join(dir, 'go') : '';
  try {
    const running = run(process.execPath, [path.join(FIXTURES, 'many-client.mjs'), host, String(port), String(total), String(concurrency), String(size), dir ? `hold:${go}` : ''], {
      ...where,
      allowFailure: true,
      timeoutMs: 180_000,
    });
    let failure: unknown = null;
    try {
      if (whenOpen) await whenOpen();
    } catch (err) {
      failure = err;
    }
    // Also when whenOpen failed: the clients go and end before the file goes.
    if (dir) fs.writeFileSync(go, '');
    const r = await running;
    if (failure) throw failure;
    return parseManyClients(r.stdout);
  } finally {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }
}

function parseManyClients(stdout: string) {
  return JSON.parse(stdout.trim().split('\n').pop() || '{"ok":false,"firstError":"no output"}') as {
    ok: boolean;
    done: number;
    failed: number;
    maxOpen: number;
    firstError: string | null;
  };
}

/** Bytes a process moved by read(2) and write(2) and their vector forms,
 * on any file (/proc/<pid>/io: rchar, wchar), the calls Node.js's streams
 * make; recv(2) and send(2) are not counted. */
function ioBytes(pid: number): { read: number; written: number } {
  const text = fs.readFileSync(`/proc/${pid}/io`, 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { read: field('rchar'), written: field('wchar') };
}

/** utime + stime of a process we started and that still runs, in seconds. */
function cpuSeconds(pid: number): number {
  const s = processCpuSeconds(pid);
  assert.ok(s !== null, `CPU time of pid ${pid}`);
  return s;
}

/**
 * Runs `work`; if it has not finished after `afterMs`, records what could
 * explain a stall: the sockets in both namespaces (queues, memory, TCP
 * state) and the proxy's splice counters, returned with the result.
 */
async function withStallSnapshot<T>(
  b: { app: string; remote: string; proxy: { pid: number } | null },
  afterMs: number,
  work: Promise<T>,
): Promise<{ result: T; snapshot: string }> {
  let snapshot = '';
  const timer = setTimeout(() => {
    const ss = (netns: string) => run('ss', ['-tnmie'], { netns, allowFailure: true, timeoutMs: 10_000 }).then((r) => `ss in ${netns}:\n${r.stdout}`);
    try {
      snapshot = `splice counters: ${JSON.stringify(spliceOf(b.proxy?.pid ?? -1).counters, (_k, v) => (typeof v === 'bigint' ? v.toString() : v))}\n`;
    } catch (err) {
      snapshot = `splice counters: ${String(err)}\n`;
    }
    void Promise.all([ss(b.app), ss(b.remote)]).then((parts) => (snapshot += parts.join('\n')));
  }, afterMs);
  try {
    const result = await work;
    return { result, snapshot };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The loss a lossy test is about did happen: the filters dropped data
 * packets and ACKs on both ends of the veth (their own counters), and TCP
 * retransmitted segments since `retransBefore` (nstat, both namespaces).
 */
async function assertLoss(t: import('node:test').TestContext, namespaces: string[], retransBefore: number): Promise<void> {
  let retrans = -retransBefore;
  for (const netns of namespaces) {
    const d = await droppedPackets(netns);
    t.diagnostic(`${netns}: dropped ${d.data} data packets and ${d.acks} ACKs`);
    assert.ok(d.data > 0 && d.acks > 0, `${netns}: packets were dropped (${JSON.stringify(d)})`);
    retrans += await retransmittedSegments(netns);
  }
  t.diagnostic(`retransmitted segments: ${retrans}`);
  assert.ok(retrans > 0, `TCP retransmitted (${retrans} segments)`);
}

/** Polls every 25 ms, as these map reads are cheap. */
const waitUntil = (cond: () => boolean, ms: number) => waitFor(cond, ms, 25);

describe('accel proxy --splice', { skip: kernelLacks('intercept', 'splice') }, () => {
  // 64 MB each way at once, IPv4 then IPv6, through the proxy to the
  // remote echo server. Each side half-closes while bytes for it still wait
  // in its psock: the verdict must not queue the FIN behind them (they
  // stalled there for good until sksplice.c dropped empty skbs), and the
  // proxy must forward it only after them.
  async function duplex(t: import('node:test').TestContext, lossy: boolean) {
    const b = await interceptBench(t, { proxyInCgroup: false, proxyArgs: ['--splice'] });
    if (lossy) await dropPackets([b.app, b.remote]);
    const retransBefore = lossy ? (await retransmittedSegments(b.app)) + (await retransmittedSegments(b.remote)) : 0;
    for (const host of [SERVER4, SERVER6]) {
      const { result: c, snapshot } = await withStallSnapshot(b, 50_000, nodeClient(b, host, ECHO_PORT, 64 * MB));
      const warnings = (b.proxy?.lines() ?? []).filter((l) => /"level":"(warn|error)"/.test(l));
      assert.ok(c.ok, `${host}: ${JSON.stringify(c)}\n${snapshot}\nproxy warnings:\n${warnings.join('\n')}`);
    }
    const ev = b.proxyEvents();
    assert.ok(ev.length >= 2 && ev.every((e) => e.mode === 'splice'), JSON.stringify(ev.map((e) => e.mode)));
    if (lossy) await assertLoss(t, [b.app, b.remote], retransBefore);
    const s = spliceOf(b.proxy?.pid ?? -1);
    // What arrived before the hand-off (node's buffers) goes through user
    // space, and so does what follows a half-close that came while its
    // socket was held back (backpressure): the map takes back only
    // established sockets.
    assert.ok(s.counters.bytes_redirected >= BigInt(128 * MB), `bytes redirected in the kernel: ${s.counters.bytes_redirected}`);
    assert.equal(s.counters.pairs_spliced, 2n);
    assert.equal(s.counters.bytes_repeat_sent, 0n);
    assert.ok(await waitUntil(() => spliceOf(b.proxy?.pid ?? -1).counters.pairs_closed === 2n, 5000), 'both pairs closed');
    assert.equal(spliceOf(b.proxy?.pid ?? -1).sockets, 0, 'no map entry outlives its connection');
  }

  it('moves 64 MB both ways at once in the kernel, byte-exact, with writes from 1 byte to 1 MB (IPv4, IPv6)', (t) => duplex(t, false));

  // The stall once seen here in the full suite (1 of 3 fresh runs) came
  // back under loss with the half-close counted by bytes sent: with 3% of
  // data and 10% of ACK packets dropped on the veth, 4 of 7 runs failed (a
  // client timed out with nothing received, got a reset, or an early end).
  it('does the same over a veth that drops 3% of data and 10% of ACK packets', (t) => duplex(t, true));

  it('hands off bytes the proxy peeked (a policy that reads names) and bytes sent with the connection, in order', async (t) => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-splice-'));
    t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
    const policy = path.join(tmp, 'policy.json');
    // The SNI rule makes the proxy peek at every connection; the HTTP ones
    // are decided before any Host rule, so they may be spliced (an HTTP
    // connection decided by Host is relayed request by request instead,
    // see test/proxy/admission.test.ts).
    fs.writeFileSync(
      policy,
      JSON.stringify({
        default: 'deny',
        rules: [
          { action: 'allow', destination: ['10.200.0.2/32', 'fd00:200::2/128'], ports: HTTP_PORT },
          { action: 'allow', ports: ECHO_PORT },
          { action: 'deny', sni: 'blocked.test' },
        ],
      }),
    );
    const b = await interceptBench(t, { proxyInCgroup: false, proxyArgs: ['--splice', '--policy', policy] });
    const body = path.join(tmp, 'body');
    const payload = crypto.randomBytes(4 * MB);
    fs.writeFileSync(body, payload);
    const want = `${payload.length} ${crypto.createHash('sha256').update(payload).digest('hex')}`;
    for (const url of [`http://${SERVER4}:${HTTP_PORT}/sha256`, `http://[${SERVER6}]:${HTTP_PORT}/sha256`]) {
      const r = await curl(b, url, ['--data-binary', `@${body}`]);
      assert.equal(r.stdout.trim(), want, `${url}: ${r.stderr}`);
    }
    // The Node client writes as soon as it is connected: its first bytes are
    // queued before the hand-off.
    for (const n of [1, 1000, 64 * 1024]) assert.ok((await nodeClient(b, SERVER4, ECHO_PORT, n)).ok, `${n} B`);
    const ev = b.proxyEvents();
    assert.ok(
      ev.some((e) => e.host === '10.200.0.2' && e.mode === 'splice'),
      JSON.stringify(ev),
    );
    // curl's bodies arrive after the decision: those pairs went into the map.
    assert.ok(spliceOf(b.proxy?.pid ?? -1).counters.pairs_spliced >= 2n);
  });

  it('forwards a half-close after the bytes before it, and a reset', async (t) => {
    const b = await interceptBench(t, { proxyInCgroup: false, proxyArgs: ['--splice'] });
    for (const reader of ['poll', 'blocking']) {
      const r = await runSplit({
        server: ['--family', '6', '--bytes', String(16 * MB), '--back', String(16 * MB), '--port', String(PROBE_PORT), '--reader', reader],
        client: ['--bytes', String(16 * MB), '--back', String(16 * MB), '--sizes', 'mix', '--reader', 'poll'],
        serverWhere: { netns: b.remote },
        clientWhere: b.appWhere,
        host: SERVER4,
      });
      assert.ok(r.ok, `${reader}: ${r.error}`);
    }
    const rst = await runSplit({
      server: ['--family', '6', '--bytes', String(MB), '--port', String(PROBE_PORT), '--rst', '--reader', 'poll'],
      client: ['--bytes', String(MB), '--rst'],
      serverWhere: { netns: b.remote },
      clientWhere: b.appWhere,
      host: SERVER4,
    });
    assert.ok(rst.ok, `reset: ${rst.error}`);
    assert.ok(rst.sides.find((s) => s.side === 'server')?.reset, 'the server saw the reset');
    assert.ok(b.proxyEvents().filter((e) => e.mode === 'splice').length >= 3);
  });

  it('splices 500 pairs at once, then 5,000 in a row, and the maps are empty afterwards', async (t) => {
    const b = await interceptBench(t, { proxyInCgroup: false, proxyArgs: ['--splice'] });
    const pid = b.proxy?.pid ?? -1;
    // All 500 open and handed to the kernel before any sends: a client that
    // writes and ends before its hand-off is relayed instead.
    const together = await manyClients(b.appWhere, SERVER4, ECHO_PORT, 500, 500, 4096, async () => {
      await waitUntil(() => spliceOf(pid).counters.pairs_spliced >= 500n, 60_000);
    });
    assert.ok(together.ok, JSON.stringify(together));
    assert.equal(together.maxOpen, 500);
    const inRow = await manyClients(b.appWhere, SERVER4, ECHO_PORT, 5000, 1, 512);
    assert.ok(inRow.ok, JSON.stringify(inRow));
    assert.ok(await waitUntil(() => spliceOf(pid).counters.pairs_closed === spliceOf(pid).counters.pairs_spliced, 10_000), 'every pair closed');
    const s = spliceOf(pid);
    // Every connection was handed to the splicer; those whose client had
    // already half-closed (it writes and ends at once) cannot enter the map
    // and were relayed in user space instead.
    assert.equal(b.proxyEvents().filter((e) => e.mode === 'splice').length, 5500);
    assert.ok(s.counters.pairs_spliced >= 500n, `pairs spliced in the kernel: ${s.counters.pairs_spliced} (the 500 held ones at least)`);
    assert.equal(s.sockets, 0, 'both SOCKHASHes empty');
    assert.equal(s.tracked, 0, 'per-socket entries gone');
  });

  // What makes the splice path cheap is that the proxy never reads nor
  // writes the bytes: the kernel moves them. That is asserted: the verdict
  // redirected every byte, and the proxy's streams carried none
  // (/proc/<pid>/io). Its CPU time is printed only: a CPU ratio varies with
  // the machine's load (splice/relay seen from 0.3 to 0.74 on this
  // machine, the holds' walks included), and the bench reports it.
  it('moves the bytes without the proxy reading or writing them, where the relay does both (1 GB, same run)', async (t) => {
    const through: Record<string, { read: number; written: number; cpu: number; redirected: number }> = {};
    for (const mode of ['--splice', '--no-splice']) {
      const b = await interceptBench(t, { proxyInCgroup: false, proxyArgs: [mode] });
      const pid = b.proxy?.pid ?? -1;
      const cpuBefore = cpuSeconds(pid);
      const ioBefore = ioBytes(pid);
      const r = await runSplit({
        server: ['--family', '6', '--bytes', String(1024 * MB), '--port', String(PROBE_PORT), '--reader', 'poll'],
        client: ['--bytes', String(1024 * MB), '--sizes', '65536'],
        serverWhere: { netns: b.remote },
        clientWhere: b.appWhere,
        host: SERVER4,
      });
      const spliced = mode === '--splice' ? spliceOf(pid).counters : null;
      const counters = spliced ? JSON.stringify(spliced, (_k, v) => (typeof v === 'bigint' ? String(v) : v)) : '';
      assert.ok(r.ok, `${mode}: ${r.error} ${counters}`);
      const io = ioBytes(pid);
      through[mode] = {
        read: io.read - ioBefore.read,
        written: io.written - ioBefore.written,
        cpu: cpuSeconds(pid) - cpuBefore,
        redirected: Number(spliced?.bytes_redirected ?? 0n),
      };
      if (counters) t.diagnostic(`splice counters: ${counters}`);
    }
    const splice = through['--splice'];
    const relay = through['--no-splice'];
    assert.ok(splice && relay);
    t.diagnostic(
      `proxy for 1 GB: splice read ${splice.read} B, wrote ${splice.written} B, ${splice.cpu.toFixed(2)} CPU s; relay read ${relay.read} B, wrote ${relay.written} B, ${relay.cpu.toFixed(2)} CPU s`,
    );
    // The control: the relay's system calls carry every byte.
    assert.ok(relay.read >= 1024 * MB && relay.written >= 1024 * MB, `the relay read ${relay.read} B and wrote ${relay.written} B`);
    // The splice path's carry the first bytes (the policy's look), and at
    // most one receive buffer more: a socket held back (its destination
    // behind) when the client's FIN arrives cannot go back into the
    // verdict's map, so the proxy relays what it holds (README, known
    // limits). The kernel moved the rest.
    const rmemMax = Number(fs.readFileSync('/proc/sys/net/ipv4/tcp_rmem', 'utf8').trim().split(/\s+/)[2]);
    const tail = rmemMax + MB;
    assert.ok(splice.read <= tail && splice.written <= tail, `splice: the proxy read ${splice.read} B and wrote ${splice.written} B`);
    assert.ok(splice.redirected >= 1024 * MB - tail, `splice: the verdict redirected ${splice.redirected} B`);
  });
});

describe('accel echo and accel relay', { skip: kernelLacks('splice') }, () => {
  function startServer(t: import('node:test').TestContext, kind: 'echo' | 'relay', port: number, extra: string[] = [], where: Placement = {}) {
    const p = spawn(process.execPath, [CLI, kind, '--port', String(port), '--grace-ms', '200', ...extra], { ...where, watchStderr: true });
    t.after(async () => {
      await stopProcess(p);
      removeStaleSplicePins();
    });
    return p;
  }

  it('echo: every byte back from the kernel, IPv4 and IPv6, small to 32 MB, 200 clients at once, socat', async (t) => {
    const port = 17001;
    const p = startServer(t, 'echo', port);
    assert.ok(await p.waitForLine((l) => l.includes('"event":"listening"')));
    for (const host of ['127.0.0.1', '::1']) {
      for (const n of [1, 4096, 32 * MB]) {
        const r = await run(process.execPath, [path.join(FIXTURES, 'node-client.mjs'), host, String(port), String(n)], { allowFailure: true, timeoutMs: 60_000 });
        assert.match(r.stdout, /"ok":true/, `${host} ${n}: ${r.stdout}`);
      }
    }
    // All 200 open at once, then all send (none of this test's assertions
    // needs every one spliced first).
    const many = await manyClients({}, '127.0.0.1', port, 200, 200, 16384, () => new Promise((resolve) => setTimeout(resolve, 1000)));
    assert.ok(many.ok, JSON.stringify(many));
    const socat = await run('socat', ['-t', '5', '-', `TCP:127.0.0.1:${port}`], { input: 'hello, kernel\n', timeoutMs: 10_000 });
    assert.equal(socat.stdout, 'hello, kernel'); // execa drops the final newline
    const s = spliceOf(p.pid);
    // The 32 MB clients write faster than they read back: the echo socket
    // is held back, and one whose client half-closes meanwhile cannot go
    // back into the verdict's map (it takes only established sockets), so
    // node relays its rest. Most bytes still move in the kernel.
    assert.ok(s.counters.bytes_redirected >= BigInt(16 * MB), `${s.counters.bytes_redirected}`);
    const st = JSON.parse((await accel(['status', '--json'])).stdout) as { splices: { owner: string; pid: number; counters: { bytes_redirected: string } }[] };
    const mine = st.splices.find((x) => x.pid === p.pid);
    assert.equal(mine?.owner, `echo-${port}`, 'accel status shows the echo server');
    assert.ok(BigInt(mine?.counters.bytes_redirected ?? 0) >= BigInt(16 * MB));
    p.kill('SIGTERM');
    const done = await p.done;
    assert.equal(done.exitCode, 0);
    assert.equal(
      listSpliceDirs(BPFFS).some((d) => d.pid === p.pid),
      false,
      'pins removed on exit',
    );
  });

  // A retransmission that re-covers bytes whose ACK got lost arrives as one
  // segment starting before what the socket has received; TCP queues it
  // whole and the kernel's read_skb path hands it to the verdict whole. The
  // client (TCP_REPAIR) replays the tail of what it sent together with new
  // bytes: the echo must bring back only the new ones.
  it('echo: a segment that repeats bytes already received is cut to its new bytes (IPv4, IPv6)', async (t) => {
    const port = 17008;
    const p = startServer(t, 'echo', port);
    assert.ok(await p.waitForLine((l) => l.includes('"event":"listening"')));
    let repeated = 0;
    for (const host of ['127.0.0.1', '::1']) {
      // Less than one cut step, several steps, more than a 64 KB segment.
      for (const [overlap, fresh] of [
        [500, 1000],
        [20_000, 30_000],
        [40_000, 1],
      ] as const) {
        const r = await run('python3', [path.join(FIXTURES, 'overlap-client.py'), host, String(port), String(overlap), String(fresh)], { allowFailure: true, timeoutMs: 30_000 });
        assert.match(r.stdout, /"ok": true/, `${host} ${overlap}+${fresh}: ${r.stdout} ${r.stderr}`);
        repeated += overlap;
      }
    }
    const c = spliceOf(p.pid).counters;
    // TCP drops a whole segment of old bytes itself, so the program may see
    // less than was replayed, never none of it; all of it was cut.
    assert.ok(c.bytes_repeated > 0n && c.bytes_repeated <= BigInt(repeated), `bytes_repeated ${c.bytes_repeated} of ${repeated} replayed`);
    assert.equal(c.bytes_repeat_sent, 0n);
    assert.ok(await waitUntil(() => spliceOf(p.pid).sockets === 0, 5000), 'no map entry left');
  });

  it('relay: pairs clients one after the other and splices them, many pairs, IPv4 and IPv6, socat', async (t) => {
    const port = 17003;
    const p = startServer(t, 'relay', port);
    assert.ok(await p.waitForLine((l) => l.includes('"event":"listening"')));
    for (const [host, pairs, size, conc] of [
      ['127.0.0.1', 100, 65536, 1],
      ['::1', 50, 65536, 1],
      ['127.0.0.1', 100, 1024, 10],
    ] as const) {
      const r = await run(process.execPath, [path.join(FIXTURES, 'relay-pairs.mjs'), host, String(port), String(pairs), String(size), String(conc)], {
        allowFailure: true,
        timeoutMs: 120_000,
      });
      assert.match(r.stdout, /"ok":true/, `${host} ${pairs}x${size}: ${r.stdout} ${r.stderr}`);
    }
    // Two socat clients: each receives what the other sent.
    const a = run('socat', ['-t', '3', '-', `TCP:127.0.0.1:${port}`], { input: 'from a\n', timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 300));
    const bb = await run('socat', ['-t', '3', '-', `TCP:[::1]:${port}`], { input: 'from b\n', timeoutMs: 10_000 });
    assert.equal(bb.stdout, 'from a');
    assert.equal((await a).stdout, 'from b');
    assert.ok(await waitUntil(() => spliceOf(p.pid).sockets === 0, 5000), 'no map entry left');
  });

  // The first client of each pair has sent far more than the relay holds
  // for it, so node has read part of what the kernel queued: the verdict
  // program gets a buffer node read in part, and must cut the part read
  // (without a cut, up to 128 KB arrived twice; with one of at most 255 KB,
  // 9 of 60 pairs still got up to 65 KB twice). The second client sends
  // 1,000 bytes, and both half-close only once they have their partner's
  // bytes: the pair stays established, so it is spliced in the kernel.
  it('relay: 4 MB one way per pair, after node read part of it', async (t) => {
    const port = 17006;
    const p = startServer(t, 'relay', port);
    assert.ok(await p.waitForLine((l) => l.includes('"event":"listening"')));
    const r = await run(process.execPath, [path.join(FIXTURES, 'relay-pairs.mjs'), '::1', String(port), '20', String(4 * MB), '1', '1000', 'late'], {
      allowFailure: true,
      timeoutMs: 60_000,
    });
    assert.match(r.stdout, /"ok":true/, r.stdout);
    const c = spliceOf(p.pid).counters;
    assert.ok(c.bytes_redirected >= BigInt(4 * MB), 'pairs were spliced in the kernel');
    assert.equal(c.bytes_repeat_sent, 0n);
    assert.ok(await waitUntil(() => spliceOf(p.pid).sockets === 0, 5000), 'no map entry left');
  });

  // Both clients of a pair stream 64 MB at once and half-close as soon as
  // they have written it, long before their partner's bytes are through:
  // most runs of this stalled one pair until empty skbs were dropped. The
  // relay holds sockets back here (destinations congest): 1 run in about
  // 15 stalled, one to four 64 KB skbs short, while a hold took a socket
  // out of the verdict's map in the middle of a verdict run, until holds
  // took sockets out with each one locked (iter_splice_hold.c).
  it('relay: 64 MB both ways at once per pair, 3 pairs', async (t) => {
    const port = 17007;
    const p = startServer(t, 'relay', port);
    assert.ok(await p.waitForLine((l) => l.includes('"event":"listening"')));
    const r = await run(process.execPath, [path.join(FIXTURES, 'relay-pairs.mjs'), '127.0.0.1', String(port), '3', String(64 * MB), '1'], {
      allowFailure: true,
      timeoutMs: 90_000,
    });
    const s = spliceOf(p.pid);
    const c = s.counters;
    t.diagnostic(`holds reported ${c.holds}, released ${c.releases}`);
    assert.match(r.stdout, /"ok":true/, `${r.stdout} (holds reported ${c.holds}, released ${c.releases})`);
    assert.equal(c.pairs_spliced, 3n);
    assert.ok(c.bytes_redirected >= BigInt(3 * 64 * MB), `bytes redirected in the kernel: ${c.bytes_redirected}`);
    assert.ok(await waitUntil(() => spliceOf(p.pid).sockets === 0, 5000), 'no map entry left');
  });

  // Packets dropped at random on both ends of a veth (a tc program): TCP
  // retransmits bytes the receiver may have already, and a packet dropped
  // before it left the host is counted as sent (tcpi_bytes_sent) and sent
  // again as new data. Every byte must arrive once, and a half-close only
  // after them: counting the send stream by bytes sent forwarded FINs early
  // and lost client tails in 5 of 5 runs of this test.
  it('relay: byte-exact over a veth that drops 3% of data and 10% of ACK packets', async (t) => {
    const ns = await testNetns(t);
    await dropPackets([ns.app, ns.remote]);
    const retransBefore = (await retransmittedSegments(ns.app)) + (await retransmittedSegments(ns.remote));
    const port = 17009;
    const p = startServer(t, 'relay', port, [], { netns: ns.remote });
    assert.ok(await p.waitForLine((l) => l.includes('"event":"listening"')));
    const r = await run(process.execPath, [path.join(FIXTURES, 'relay-pairs.mjs'), SERVER4, String(port), '6', String(32 * MB), '3'], {
      netns: ns.app,
      allowFailure: true,
      timeoutMs: 120_000,
    });
    assert.match(r.stdout, /"ok":true/, r.stdout);
    const s = spliceOf(p.pid);
    assert.equal(s.counters.pairs_spliced, 6n);
    assert.equal(s.counters.bytes_repeat_sent, 0n);
    await assertLoss(t, [ns.app, ns.remote], retransBefore);
    t.diagnostic(`repeated bytes cut: ${s.counters.bytes_repeated}`);
    assert.ok(await waitUntil(() => spliceOf(p.pid).sockets === 0, 5000), 'no map entry left');
  });

  // The client half-closes, then resets: node has stopped reading it at the
  // end of stream and is told nothing, so the relay looks at the TCP state
  // of the waiting client before pairing (a pair used to hang here).
  it('relay: a waiting client that vanishes is dropped, and nothing leaks', async (t) => {
    const port = 17004;
    const p = startServer(t, 'relay', port);
    assert.ok(await p.waitForLine((l) => l.includes('"event":"listening"')));
    // Connects and vanishes (reset) before a partner arrives.
    await run('socat', ['-u', 'OPEN:/dev/null', `TCP:127.0.0.1:${port},linger=0`], { timeoutMs: 5000 });
    await new Promise((r) => setTimeout(r, 200));
    // A full pair afterwards is not paired with the vanished one.
    const r = await run(process.execPath, [path.join(FIXTURES, 'relay-pairs.mjs'), '127.0.0.1', String(port), '3', '1000', '1'], { allowFailure: true, timeoutMs: 30_000 });
    assert.match(r.stdout, /"ok":true/, r.stdout);
    assert.ok(await waitUntil(() => spliceOf(p.pid).sockets === 0, 5000), 'no map entry left');
    p.kill('SIGTERM');
    const done = await p.done;
    const stats = JSON.parse(done.stdout.split('\n').find((l) => l.includes('"stopped"')) ?? '{}') as { stats?: { abandoned: number } };
    assert.equal(stats.stats?.abandoned, 1);
  });

  it('bad input: a port in use, a file that is no BPF object, an object the verifier refuses: one clear line, nothing pinned', async (t) => {
    const port = 17005;
    const p = startServer(t, 'echo', port);
    assert.ok(await p.waitForLine((l) => l.includes('"event":"listening"')));
    const inUse = await accel(['echo', '--port', String(port)]);
    assert.equal(inUse.exitCode, 3, inUse.stderr);
    assert.match(inUse.stderr.trim(), /already in use.*\[E_ADDRESS_IN_USE\]$/);
    const bad = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-badobj-'));
    t.after(() => fs.rmSync(bad, { recursive: true, force: true }));
    fs.writeFileSync(path.join(bad, 'sksplice.bpf.o'), 'not an ELF object');
    const refused = await accel(['--bpf-dir', bad, 'relay', '--port', String(port + 1)]);
    assert.equal(refused.exitCode, 3, refused.stderr);
    assert.match(refused.stderr.trim(), /\[E_BPF_OBJECT\]$/);
    assert.equal(refused.stderr.trim().split('\n').length, 1);
    // A valid object that the kernel's verifier refuses (test/fixtures/bpf/rejected.c).
    fs.copyFileSync(path.join(BPF_DIR, 'test', 'rejected.bpf.o'), path.join(bad, 'sksplice.bpf.o'));
    const rejected = await accel(['--bpf-dir', bad, 'relay', '--port', String(port + 1)]);
    assert.equal(rejected.exitCode, 3, rejected.stderr);
    assert.match(rejected.stderr.trim(), /^accel: the kernel refused .*\[E_BPF_LOAD\]$/);
    assert.equal(rejected.stderr.trim().split('\n').length, 1);
    assert.deepEqual(
      listSpliceDirs(BPFFS)
        .filter((d) => d.pid !== p.pid)
        .map((d) => d.owner),
      [],
      'nothing pinned by the failed commands',
    );
  });
});
