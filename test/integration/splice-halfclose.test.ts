// The splicer (src/splice/splicer.ts) in this process, on loopback pairs:
// a client, the splicer's two sockets, and a server. A half-close is
// forwarded only after every byte before it, however long the server takes
// to read them (the FIN once went after 30 s with bytes still owed, and the
// server saw a clean end short of them); and a pair the splice maps have no
// room for is relayed in user space, byte-exact, instead of being reset.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { type TestContext, describe, it } from 'node:test';
import { SpliceAttachment } from '../../src/splice/objects.js';
import { KernelSplicer, type SpliceResult } from '../../src/splice/splicer.js';
import { nodeSocketFd } from '../../src/sys/node-internals.js';
import { closeSocket, dupSocket, setSendBuffer, tcpStreamCounts } from '../../src/sys/socket.js';
import { BPFFS, BPF_DIR, removeStaleSplicePins, waitFor } from '../helpers/env.js';

const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

function listen(t: TestContext, onConnection: (s: net.Socket) => void): Promise<number> {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => {
    s.on('error', () => {});
    onConnection(s);
  });
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return new Promise((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, () => resolve((server.address() as net.AddressInfo).port)));
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Every byte until the end; rejects on an error (a reset). */
function readAll(s: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
    s.resume();
  });
}

interface Pair {
  /** The client, and the server's accepted socket. */
  client: net.Socket;
  server: net.Socket;
  /** The splicer's two sockets. */
  accepted: net.Socket;
  upstream: net.Socket;
}

/** client -> [accepted | upstream] -> server, all on loopback, paused. */
async function pair(t: TestContext, beforeSplice?: (p: Pair) => void): Promise<Pair> {
  let accepted: (s: net.Socket) => void = () => {};
  let served: (s: net.Socket) => void = () => {};
  const proxyPort = await listen(t, (s) => accepted(s));
  const serverPort = await listen(t, (s) => served(s));
  const gotAccepted = new Promise<net.Socket>((resolve) => (accepted = resolve));
  const gotServed = new Promise<net.Socket>((resolve) => (served = resolve));
  const client = await connect(proxyPort);
  const upstream = await connect(serverPort);
  const p: Pair = { client, server: await gotServed, accepted: await gotAccepted, upstream };
  for (const s of [p.client, p.server, p.accepted, p.upstream]) {
    s.on('error', () => {});
    t.after(() => s.destroy());
  }
  beforeSplice?.(p);
  return p;
}

function openSplice(t: TestContext, maxSockets?: number): KernelSplicer {
  const attachment = SpliceAttachment.open({ bpffs: BPFFS, bpfDir: BPF_DIR, owner: 'test-halfclose', ...(maxSockets ? { maxSockets } : {}) });
  t.after(() => {
    attachment.close();
    removeStaleSplicePins();
  });
  return new KernelSplicer(attachment, { halfCloseWarnMs: 200 });
}

describe('splice: half-close and full maps', () => {
  it('a half-close waits for the bytes before it past the old deadline, and the server gets every byte before a clean end', async (t) => {
    const splicer = openSplice(t);
    // The upstream socket's send buffer is small and the server does not
    // read, so most of what the client sends waits in the kernel beyond
    // them; 256 KiB is a handful of skbs, too few to be held back.
    let upstreamFd = -1;
    const p = await pair(t, (x) => {
      // Our own descriptor, to read its send stream whatever node does.
      upstreamFd = dupSocket(nodeSocketFd(x.upstream) ?? -1);
      t.after(() => closeSocket(upstreamFd));
      setSendBuffer(upstreamFd, 4096);
    });
    const spliced = splicer.splice(p.accepted, p.upstream);
    const payload = crypto.randomBytes(256 * 1024);
    let ended = false;
    p.accepted.once('end', () => (ended = true));
    p.client.end(payload);

    assert.ok(await waitFor(() => ended, 5000), 'the client’s half-close reached the splicer');
    // Four times past the warning (the old code's deadline, at the same
    // setting), and bytes are still owed: the server has read nothing.
    await sleep(800);
    const entered = tcpStreamCounts(upstreamFd).sendStream - 1n; // less its SYN
    assert.ok(entered < BigInt(payload.length), `bytes still owed after the deadline (${entered} of ${payload.length} in the upstream send stream)`);
    assert.equal(splicer.maps.counters().holds, 0n, 'nothing was held back: the bytes wait in the kernel');

    const got = await readAll(p.server);
    assert.equal(got.length, payload.length, 'every byte before the end');
    assert.equal(sha(got), sha(payload));
    // The other way: the server's end reaches the client, and the pair closes.
    p.server.end();
    assert.equal((await readAll(p.client)).length, 0);
    const r: SpliceResult = await spliced;
    assert.deepEqual([r.inKernel, r.reset, r.aToB], [true, false, payload.length]);
  });

  it('a pair the splice maps have no room for is relayed in user space, byte-exact both ways, while the spliced one goes on', async (t) => {
    // Room for one pair: two sockets.
    const splicer = openSplice(t, 2);
    const echo = (p: Pair) => {
      p.server.pipe(p.server);
      p.server.resume();
    };
    const first = await pair(t);
    const second = await pair(t);
    echo(first);
    echo(second);
    // A splice that fails resets its pair: kept as the error it gave.
    const results = [first, second].map((p) => splicer.splice(p.accepted, p.upstream).catch((err: unknown) => err as Error));
    for (const [i, p] of [first, second].entries()) {
      const payload = crypto.randomBytes(4 << 20);
      const back = readAll(p.client).catch((err: unknown) => err as Error);
      p.client.end(payload);
      const got = await Promise.race([back, sleep(20_000).then(() => new Error('no end within 20 s'))]);
      assert.ok(Buffer.isBuffer(got), `pair ${i + 1}: ${String(got)}; splice: ${String(await Promise.race([results[i], sleep(10).then(() => 'pending')]))}`);
      assert.equal(sha(got), sha(payload), `pair ${i + 1}: ${got.length} of ${payload.length} bytes echoed`);
    }
    const [r1, r2] = (await Promise.all(results)).map((r) => {
      assert.ok(!(r instanceof Error), String(r));
      return r;
    });
    assert.equal(r1?.inKernel, true, 'the first pair in the kernel');
    assert.equal(r2?.inKernel, false, 'the second relayed in user space');
    assert.deepEqual([r2?.aToB, r2?.bToA, r2?.reset], [4 << 20, 4 << 20, false]);
    const c = splicer.maps.counters();
    assert.deepEqual([c.pairs_spliced, c.pairs_closed], [1n, 1n]);
    assert.equal(splicer.maps.trackedCount(), 0, 'nothing left in the maps');
  });
});
