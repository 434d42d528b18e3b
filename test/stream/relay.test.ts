// The user-space relay (src/stream/relay.ts) over loopback, no privileges:
// bytes exact both ways through the buffers every connection shares (while
// writes are held back, which is when a write keeps its buffer), a reader
// that stops holds the writer back with a bounded amount in the relay, the
// bytes node read before the relay go first, half-close and reset forwarded.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { READ_BYTES, type RelayResult, relay } from '../../src/stream/relay.js';

const MB = 1024 * 1024;

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** `total` bytes of a pattern that differs per seed and per offset, in
 * chunks of `chunk`. */
function pattern(seed: number, total: number, chunk = 100_003): Buffer[] {
  const out: Buffer[] = [];
  let x = seed * 2654435761;
  for (let at = 0; at < total; at += chunk) {
    const b = Buffer.allocUnsafe(Math.min(chunk, total - at));
    for (let i = 0; i < b.length; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      b[i] = x >>> 24;
    }
    out.push(b);
  }
  return out;
}

const sha = (chunks: Buffer[]) => chunks.reduce((h, c) => h.update(c), createHash('sha256')).digest('hex');

interface Chain {
  /** The application's end, and the server's end of its connection. */
  client: net.Socket;
  server: net.Socket;
  /** The relay's two sockets: the accepted client, its upstream. */
  accepted: net.Socket;
  upstream: net.Socket;
  result: Promise<RelayResult>;
  close(): void;
}

/**
 * client -> proxy (relay) -> server on 127.0.0.1, every socket half-open
 * capable. `beforeRelay` runs once the upstream is connected, before the
 * relay starts.
 */
async function chain(beforeRelay?: (c: Omit<Chain, 'result' | 'close'>) => Promise<void>): Promise<Chain> {
  const upstreamServer = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
  upstreamServer.listen(0, '127.0.0.1');
  await once(upstreamServer, 'listening');
  const proxy = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  const accepting = once(proxy, 'connection');
  const client = net.connect({ port: (proxy.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  const [accepted] = (await accepting) as [net.Socket];
  const serving = once(upstreamServer, 'connection');
  const upstream = net.connect({ port: (upstreamServer.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  await once(upstream, 'connect');
  const [server] = (await serving) as [net.Socket];
  for (const s of [client, server]) s.on('error', () => {});
  const parts = { client, server, accepted, upstream };
  await beforeRelay?.(parts);
  const close = () => {
    for (const s of [client, server, accepted, upstream]) s.destroy();
    upstreamServer.close();
    proxy.close();
  };
  return { ...parts, result: relay(accepted, upstream), close };
}

/** Everything `from` sends until its end, read with a pause of `pauseMs`
 * after every `every` bytes (0: never), which fills the relay's writer. */
function collect(from: net.Socket, every = 0, pauseMs = 0): Promise<Buffer[]> {
  return new Promise((resolve) => {
    const got: Buffer[] = [];
    let since = 0;
    from.on('data', (d: Buffer) => {
      got.push(d);
      since += d.length;
      if (every && since >= every) {
        since = 0;
        from.pause();
        setTimeout(() => from.resume(), pauseMs);
      }
    });
    from.once('end', () => resolve(got));
    from.resume();
  });
}

async function send(to: net.Socket, chunks: Buffer[]): Promise<void> {
  for (const c of chunks) if (!to.write(c)) await once(to, 'drain');
  to.end();
}

describe('user-space relay', () => {
  it('carries every byte exactly, both ways at once, on three connections whose readers stall now and then', { timeout: 60_000 }, async () => {
    const chains = await Promise.all([chain(), chain(), chain()]);
    try {
      const runs = chains.map(async (c, i) => {
        const up = pattern(2 * i + 1, 12 * MB);
        const down = pattern(2 * i + 2, 12 * MB);
        // The stalls keep writes waiting in node's queue: the buffers they
        // point into must not be read into by another connection meanwhile.
        const [gotUp, gotDown] = await Promise.all([collect(c.server, 2 * MB, 15), collect(c.client, 3 * MB, 10), send(c.client, up), send(c.server, down)]);
        assert.equal(Buffer.concat(gotUp).length, 12 * MB, `connection ${i}: bytes up`);
        assert.equal(sha(gotUp), sha(up), `connection ${i}: the bytes up differ`);
        assert.equal(Buffer.concat(gotDown).length, 12 * MB, `connection ${i}: bytes down`);
        assert.equal(sha(gotDown), sha(down), `connection ${i}: the bytes down differ`);
        const r = await c.result;
        assert.deepEqual(r, { up: 12 * MB, down: 12 * MB, reset: false });
      });
      await Promise.all(runs);
    } finally {
      for (const c of chains) c.close();
    }
  });

  it('a server that stops reading holds the client back, with at most its high-water mark and one read in the relay, then gets every byte', { timeout: 60_000 }, async () => {
    const c = await chain();
    try {
      const total = 64 * MB;
      const chunks = pattern(7, total);
      const sending = send(c.client, chunks);
      // The server does not read: the kernel's queues fill, then the relay's.
      let peak = 0;
      let still = 0;
      let last = -1;
      while (still < 20) {
        await sleep(10);
        peak = Math.max(peak, c.upstream.writableLength);
        const moved = c.accepted.bytesRead;
        still = moved === last ? still + 1 : 0;
        last = moved;
      }
      assert.ok(c.accepted.bytesRead < total / 2, `the relay read ${c.accepted.bytesRead} B of ${total} from the client while the server read nothing`);
      const bound = c.upstream.writableHighWaterMark + READ_BYTES;
      assert.ok(peak <= bound, `the relay held ${peak} B for the server, more than ${bound}`);
      assert.ok(c.client.writableLength > 0, "the client's writes are held back");
      const got = collect(c.server);
      const back = collect(c.client);
      await sending;
      assert.equal(sha(await got), sha(chunks));
      c.server.end();
      await back;
      assert.equal((await c.result).up, total);
    } finally {
      c.close();
    }
  });

  it('sends what the upstream said before the relay started first, then the rest in order', { timeout: 10_000 }, async () => {
    const c = await chain(async ({ server, upstream }) => {
      server.write('220 banner\r\n');
      // node reads it into the upstream socket's own buffer, before the relay.
      await until('the banner in node', () => upstream.readableLength === 12);
    });
    try {
      const got = collect(c.client);
      void collect(c.server);
      await until('the banner at the client', () => c.client.bytesRead === 12);
      c.server.end('250 ok\r\n');
      c.client.end();
      assert.equal(Buffer.concat(await got).toString(), '220 banner\r\n250 ok\r\n');
      assert.equal((await c.result).down, 20);
    } finally {
      c.close();
    }
  });

  it('forwards a half-close each way: the other direction keeps flowing until its own end', { timeout: 10_000 }, async () => {
    const c = await chain();
    try {
      const atServer = collect(c.server);
      c.client.end('request');
      assert.equal(Buffer.concat(await atServer).toString(), 'request', 'the server sees the end after the bytes');
      const atClient = collect(c.client);
      c.server.write('reply after ');
      await sleep(20);
      c.server.end('the half-close');
      assert.equal(Buffer.concat(await atClient).toString(), 'reply after the half-close');
      assert.deepEqual(await c.result, { up: 7, down: 26, reset: false });
    } finally {
      c.close();
    }
  });

  it('forwards a reset: the server resets, the client sees ECONNRESET, the relay reports it', { timeout: 10_000 }, async () => {
    const c = await chain();
    try {
      const clientError = new Promise<string | undefined>((resolve) => c.client.once('error', (e: NodeJS.ErrnoException) => resolve(e.code)));
      c.client.write('hello');
      c.server.resume();
      await until('the bytes at the server', () => c.server.bytesRead === 5);
      c.server.resetAndDestroy();
      assert.equal(await clientError, 'ECONNRESET');
      assert.equal((await c.result).reset, true);
    } finally {
      c.close();
    }
  });
});
