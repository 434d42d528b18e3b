/**
 * Relaying one connection in user space: each side forwarded into the other
 * (the reader pauses while the writer's buffer is full, so memory stays
 * bounded whatever the speeds), half-close forwarded as end(), a reset
 * forwarded as a reset. Bulk bytes cost one read, one copy and one write
 * per up to 256 KiB, through buffers shared by every connection.
 */
import type net from 'node:net';
import { readIntoBuffer } from '../sys/node-internals.js';

export interface RelayResult {
  /** Bytes client -> upstream and upstream -> client. */
  up: number;
  down: number;
  reset: boolean;
}

/** An error on either side resets the other; `done` runs once both have
 * closed, told whether either saw a reset or a broken pipe. */
export function closeTogether(client: net.Socket, upstream: net.Socket, done: (reset: boolean) => void): void {
  let reset = false;
  let closed = 0;
  const onError = (other: net.Socket) => (err: NodeJS.ErrnoException) => {
    reset = reset || err.code === 'ECONNRESET' || err.code === 'EPIPE';
    if (!other.destroyed) other.resetAndDestroy();
  };
  client.on('error', onError(upstream));
  upstream.on('error', onError(client));
  const onClose = () => {
    if (++closed === 2) done(reset);
  };
  client.once('close', onClose);
  upstream.once('close', onClose);
}

/** The most one read takes from a socket. Reads of 64 KiB (node's own)
 * cost a fresh buffer each and four times the callbacks; bigger ones
 * barely read more at a time (the kernel rarely has more queued). */
export const READ_BYTES = 256 * 1024;

/** Reads smaller than this are written from a copy of their own size: a
 * write the kernel does not take at once pins at most 4x what it holds. */
const SHARED_WRITE_MIN = 64 * 1024;

/** Every relayed socket reads into this one buffer (node runs one read
 * callback at a time; each copies its bytes out before it returns). */
let readBuffer: Buffer | null = null;
/** The copy is written from here. A write the kernel did not take at once
 * keeps it (node's queue points into it until the rest is sent): then it
 * is left to that write and the next read gets a new one. Reading from
 * one buffer and writing from another is what lets an idle relayed
 * connection hold no buffer of its own. */
let writeBuffer: Buffer | null = null;

/**
 * Each read from `from` is written to `to`; `from` stops reading while
 * `to`'s buffer is over its high-water mark and resumes on its drain; `from`'s
 * end is `to`'s end, after the last byte. What pipe() does for a socket
 * pair, without its bookkeeping (a listener on each of five more events per
 * direction, unpipe on end), nor a 'data' event and a new 64 KiB buffer
 * per read: reads land in one shared buffer (readIntoBuffer). What `to`
 * holds for a connection that does not read is bounded: its high-water
 * mark and the write that crossed it (at most READ_BYTES), in copies of
 * their own size, or one write buffer pinned by a large partial write.
 */
export function forward(from: net.Socket, to: net.Socket): void {
  from.pause();
  // What node read before the relay (a server speaking first) goes first.
  for (let chunk: Buffer | null; from.readableLength > 0 && (chunk = from.read() as Buffer | null) !== null;) to.write(chunk);
  const input = (readBuffer ??= Buffer.allocUnsafeSlow(READ_BYTES));
  // A socket already destroyed has nothing more to read (its close comes).
  if (!from.destroyed)
    readIntoBuffer(from, input, (bytes) => {
      // A small read, or one that queues behind a write not done yet: a
      // copy of its own size (pooled when small). A queued chunk pins the
      // whole buffer it lies in, so a writer backed up by many small reads
      // must not pin a 256 KiB buffer for each.
      if (bytes < SHARED_WRITE_MIN || to.writableLength > 0) {
        const copy = Buffer.allocUnsafe(bytes);
        input.copy(copy, 0, 0, bytes);
        return to.write(copy);
      }
      const out = (writeBuffer ??= Buffer.allocUnsafeSlow(READ_BYTES));
      input.copy(out, 0, 0, bytes);
      const more = to.write(bytes === out.length ? out : out.subarray(0, bytes));
      if (to.writableLength > 0) writeBuffer = null;
      return more;
    });
  to.on('drain', () => from.resume());
  // An end already seen (before the relay started) is forwarded now.
  if (from.readableEnded) to.end();
  else from.once('end', () => to.end());
  // Paused sockets (pauseOnConnect, a sniffed one) start reading, unless
  // what was written before the relay already fills the writer; then even
  // a socket node was reading stops (pause() stops libuv now).
  if (to.writableNeedDrain) from.pause();
  else from.resume();
}

export function relay(client: net.Socket, upstream: net.Socket): Promise<RelayResult> {
  return new Promise((resolve) => {
    closeTogether(client, upstream, (reset) => resolve({ up: upstream.bytesWritten, down: client.bytesWritten, reset }));
    forward(client, upstream);
    forward(upstream, client);
  });
}
