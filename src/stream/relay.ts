/**
 * Relaying one connection in user space: each side piped into the other
 * (pipe() pauses the reader while the writer's buffer is full, so memory
 * stays bounded whatever the speeds), half-close forwarded as end(), a
 * reset forwarded as a reset.
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

export function relay(client: net.Socket, upstream: net.Socket): Promise<RelayResult> {
  return new Promise((resolve) => {
    closeTogether(client, upstream, (reset) => resolve({ up: upstream.bytesWritten, down: client.bytesWritten, reset }));
    client.pipe(upstream);
    upstream.pipe(client);
    // pipe() forwards an end that is still to come, not one already seen.
    if (client.readableEnded) upstream.end();
    if (upstream.readableEnded) client.end();
  });
}
