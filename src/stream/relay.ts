/**
 * Relaying one connection in user space: each side forwarded into the other
 * (the reader pauses while the writer's buffer is full, so memory stays
 * bounded whatever the speeds), half-close forwarded as end(), a reset
 * forwarded as a reset.
 */
import type net from 'node:net';

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

/**
 * Each chunk read from `from` is written to `to`; `from` pauses while `to`'s
 * buffer is over its high-water mark and resumes on its drain; `from`'s end
 * is `to`'s end, after the last chunk. What pipe() does for a socket pair,
 * without its bookkeeping (a listener on each of five more events per
 * direction, unpipe on end): per connection that cost as much as the rest
 * of the proxy's JavaScript.
 */
function forward(from: net.Socket, to: net.Socket): void {
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => from.resume());
  // An end already seen (before the relay started) is forwarded now.
  if (from.readableEnded) to.end();
  else from.once('end', () => to.end());
  // Paused sockets (pauseOnConnect, a sniffed one) start flowing, unless
  // what was written before the relay already fills the writer.
  if (!to.writableNeedDrain) from.resume();
}

export function relay(client: net.Socket, upstream: net.Socket): Promise<RelayResult> {
  return new Promise((resolve) => {
    closeTogether(client, upstream, (reset) => resolve({ up: upstream.bytesWritten, down: client.bytesWritten, reset }));
    forward(client, upstream);
    forward(upstream, client);
  });
}
