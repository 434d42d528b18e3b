// What a relayed read leaves queued behind a write the kernel has not
// taken (src/stream/relay.ts): a copy of its own size, never a view of a
// 256 KiB buffer. A writer backed up by many small reads would otherwise
// pin one such buffer per read (up to its high-water mark in 1-byte reads:
// ~4 GiB). Over AF_UNIX stream sockets, no privileges: their send buffer
// does not grow (TCP's autotunes), so a peer that does not read leaves the
// writer stuck for good, and bytes written before a read are all in the
// reader's queue, so one read takes them all: every step is deterministic.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { READ_BYTES, forward } from '../../src/stream/relay.js';

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** A connected AF_UNIX stream pair: the connecting end and the accepted
 * one (accepted paused: it reads nothing until told). */
async function unixPair(path: string): Promise<{ near: net.Socket; far: net.Socket; close(): void }> {
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
  server.listen(path);
  await once(server, 'listening');
  const accepting = once(server, 'connection');
  const near = net.connect({ path, allowHalfOpen: true });
  await once(near, 'connect');
  const [far] = (await accepting) as [net.Socket];
  for (const s of [near, far]) s.on('error', () => {});
  return {
    near,
    far,
    close() {
      near.destroy();
      far.destroy();
      server.close();
    },
  };
}

/** The chunks a socket holds behind the write under way (node's Writable
 * queue; the write the kernel is taking is not among them). */
function queued(sock: net.Socket): Buffer[] {
  const q = (sock as unknown as { writableBuffer?: unknown }).writableBuffer;
  const shape = `node ${process.version}: Writable#writableBuffer is not an array of { chunk: Buffer } (this test reads the queue through it)`;
  assert.ok(Array.isArray(q), shape);
  return q.map((e: { chunk?: unknown }) => {
    assert.ok(Buffer.isBuffer(e.chunk), shape);
    return e.chunk;
  });
}

/** `total` bytes of the one byte `value`, as one buffer of their own. */
const bytes = (total: number, value: number) => Buffer.alloc(total, value);

describe('user-space relay: what its writes pin', () => {
  it(
    'small reads, and reads queued behind a stuck write, are written from copies of their own size: 1-byte reads share a small pool, a queued 100 KiB read pins 100 KiB',
    { timeout: 30_000 },
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'accel-relay-copies-'));
      // sender -> from (relay) to -> sink; the sink does not read until the end.
      const input = await unixPair(join(dir, 'in'));
      const output = await unixPair(join(dir, 'out'));
      const sender = input.near;
      const from = input.far;
      const to = output.near;
      // Every chunk the relay hands to `to`, with whether a write was pending.
      const writes: { chunk: Buffer; behind: boolean }[] = [];
      const write = to.write.bind(to) as (chunk: Buffer) => boolean;
      to.write = ((chunk: Buffer) => {
        writes.push({ chunk, behind: to.writableLength > 0 });
        return write(chunk);
      }) as typeof to.write;
      const pinned = (chunks: Buffer[]) => [...new Set(chunks.map((c) => c.buffer))].reduce((n, b) => n + b.byteLength, 0);
      const sent: Buffer[] = [];
      const send = async (b: Buffer) => {
        sent.push(b);
        await new Promise<void>((resolve, reject) => sender.write(b, (err) => (err ? reject(err) : resolve())));
      };
      try {
        forward(from, to);

        // The kernel takes every write yet: a small read is still a copy (a
        // write the kernel then took only in part would pin its buffer).
        await send(bytes(1, 0xff));
        await until('the first byte written', () => writes.length === 1);
        assert.equal(writes[0]!.behind, false);
        assert.ok(
          writes[0]!.chunk.buffer.byteLength <= Buffer.poolSize,
          `a 1-byte read is written from a ${writes[0]!.chunk.buffer.byteLength} B buffer (a pooled copy lies in ${Buffer.poolSize})`,
        );

        // Fill the kernel's queue to the sink until a write is left pending,
        // in chunks small enough that what is left stays under the
        // high-water mark (so the relay keeps reading).
        const fill = bytes(4096, 0x2e);
        for (let i = 0; i < 4096 && to.writableLength === 0; i++) {
          sent.push(fill);
          write(fill);
        }
        assert.ok(to.writableLength > 0, 'the sink, which does not read, leaves a write pending');
        assert.ok(!to.writableNeedDrain, `what is pending (${to.writableLength} B) is under the high-water mark`);
        assert.equal(queued(to).length, 0, 'nothing queued behind the pending write yet');
        const pending = to.writableLength;

        // Small reads: one byte each, the next sent once the relay has
        // queued the last, so each is a read of its own.
        const small = 32;
        for (let i = 0; i < small; i++) {
          await send(bytes(1, i));
          await until(`read ${i} queued`, () => to.writableLength === pending + i + 1);
        }
        const smallChunks = queued(to);
        assert.equal(smallChunks.length, small, 'each 1-byte read is one queued chunk');
        assert.deepEqual(Buffer.concat(smallChunks), Buffer.from(Array.from({ length: small }, (_, i) => i)), 'the queued bytes, in order');
        for (const [i, c] of smallChunks.entries())
          assert.ok(c.buffer.byteLength <= Buffer.poolSize, `queued 1-byte read ${i} pins a ${c.buffer.byteLength} B buffer (a pooled copy lies in ${Buffer.poolSize})`);
        assert.ok(pinned(smallChunks) <= 4 * Buffer.poolSize, `${small} queued 1-byte reads pin ${pinned(smallChunks)} B`);

        // A large read (over the 64 KiB under which reads are always copied),
        // queued behind the pending write: still a copy of its own size. The
        // bytes are all in the relay's receive queue before it reads again.
        const large = 100 * 1024;
        assert.ok(large < READ_BYTES);
        from.pause();
        await send(bytes(large, 0xa5));
        from.resume();
        await until('the large read queued', () => to.writableLength === pending + small + large);
        const all = queued(to);
        assert.equal(all.length, small + 1, 'the 100 KiB came in one read');
        const last = all[small]!;
        assert.ok(last.equals(sent.at(-1)!), 'the large read is queued as sent');
        assert.equal(last.buffer.byteLength, large, `the queued 100 KiB read pins a ${last.buffer.byteLength} B buffer (a copy of its own size: ${large})`);
        assert.ok(pinned(all) <= large + 4 * Buffer.poolSize, `everything queued pins ${pinned(all)} B`);
        assert.equal(writes.length, 1 + small + 1, 'the relay wrote each read once');

        // The sink reads: every byte arrives, in order.
        const expected = Buffer.concat(sent);
        const got: Buffer[] = [];
        output.far.on('data', (d: Buffer) => got.push(d));
        output.far.resume();
        await until('the sink has everything', () => got.reduce((n, b) => n + b.length, 0) >= expected.length);
        assert.ok(Buffer.concat(got).equals(expected), 'the sink gets every byte, in order');
      } finally {
        input.close();
        output.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
