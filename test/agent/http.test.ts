// The endpoints' /metrics streams the exposition family by family; a
// scraper that stops reading is cut off (after stalledScrapeMs, 30 s by
// default), so that it holds neither the scrape's series nor the server's
// close. Rootless: a loopback server and a raw client that never reads.
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, it } from 'node:test';
import { Gauge, Registry } from 'prom-client';
import { serveEndpoints } from '../../src/agent/http.js';

/** 128 families of 256 KiB each: 32 MiB, far more than the two sockets'
 * buffers hold (the sender's at most 4 MiB; the receiver's does not grow
 * while nothing is read). */
const FAMILIES = 128;
const PAD = 'x'.repeat(256 * 1024);
const STALLED_MS = 500;

function bigRegistry(): Registry {
  const registry = new Registry();
  for (let i = 0; i < FAMILIES; i++) {
    const g = new Gauge({ name: `test_pad_${i}`, help: 'padding', labelNames: ['pad'], registers: [registry] });
    g.set({ pad: PAD }, i);
  }
  return registry;
}

/** Poll until `cond` holds, at most `ms`. */
async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  return cond();
}

async function serve(): Promise<{ address: string; close(): Promise<void>; written: () => number; released: () => number }> {
  let written = 0;
  let released = 0;
  const server = await serveEndpoints(
    '127.0.0.1:0',
    {
      metrics: bigRegistry(),
      refresh: async () => {},
      release: () => void released++,
      written: () => void written++,
      unhealthy: () => null,
      ready: () => true,
    },
    { stalledScrapeMs: STALLED_MS },
  );
  return { ...server, written: () => written, released: () => released };
}

describe('agent /metrics and a stalled scraper', () => {
  it('sends the whole exposition to a scraper that reads', async () => {
    const server = await serve();
    try {
      const text = await (await fetch(`http://${server.address}/metrics`)).text();
      assert.match(text, new RegExp(`^test_pad_${FAMILIES - 1}\\{pad="x+"\\} ${FAMILIES - 1}$`, 'm'));
      assert.equal(server.written(), FAMILIES);
      assert.ok(await until(() => server.released() === 1, 5_000), 'the scrape was released');
    } finally {
      await server.close();
    }
  });

  it('cuts off a scraper that sends its request and never reads', async () => {
    const server = await serve();
    const [host, port] = server.address.split(':') as [string, string];
    const client = net.connect(Number(port), host);
    let closed = false;
    client.on('close', () => (closed = true));
    client.on('error', () => {});
    try {
      client.pause();
      client.write(`GET /metrics HTTP/1.1\r\nHost: ${server.address}\r\n\r\n`);
      // Cut off: the scrape is given up (release runs) before the
      // exposition was all made, as soon as the stall lasted STALLED_MS.
      assert.ok(await until(() => server.released() === 1, 20_000), 'the stalled scrape was given up and released');
      assert.ok(server.written() < FAMILIES, `stalled after ${server.written()} of ${FAMILIES} families`);
      // The server closed the connection: read what reached the client,
      // then its end; the chunked body lacks its last (empty) chunk.
      const chunks: Buffer[] = [];
      client.on('data', (c: Buffer) => chunks.push(c));
      client.resume();
      assert.ok(await until(() => closed, 20_000), 'the server closed the connection');
      const got = Buffer.concat(chunks);
      assert.match(got.subarray(0, 64).toString('latin1'), /^HTTP\/1\.1 200 /);
      assert.ok(!got.subarray(-5).equals(Buffer.from('0\r\n\r\n')), 'the response was cut, not finished');
      // Nothing holds the server's close.
      let serverClosed = false;
      void server.close().then(() => (serverClosed = true));
      assert.ok(await until(() => serverClosed, 10_000), 'the server closed');
    } finally {
      client.destroy();
      await server.close().catch(() => {});
    }
  });
});
