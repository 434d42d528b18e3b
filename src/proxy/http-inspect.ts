/**
 * Relaying an HTTP/1 connection whose policy decides by Host: the client's
 * bytes go upstream one request at a time, each request head checked before
 * it is written, because a keep-alive connection may ask for another Host
 * in its next request. The first request the check refuses, or the first
 * bytes the framer cannot follow, reset both sides; what was sent before
 * stays sent. Responses go back untouched, relayed as src/stream/relay.ts
 * relays bytes.
 */
import type net from 'node:net';
import { type Framed, RequestFramer } from './http-framing.js';
import type { RequestHead } from './http-head.js';
import { type RelayResult, closeTogether, forward } from '../stream/relay.js';

export type RequestVerdict = { ok: true } | { ok: false; reason: string };

export interface InspectedRelayResult extends RelayResult {
  requests: number;
  /** Why the connection was cut, and at which request (1-based); framing:
   * the bytes could not be framed as every server would (not the check). */
  refused?: { reason: string; request: number; host: string | undefined; framing?: true };
}

/** `first`: bytes already read from the client (they are framed too).
 * `check` may answer later (a name lookup): the client is paused meanwhile
 * and nothing after that request goes upstream before the answer. */
export function relayInspected(
  client: net.Socket,
  upstream: net.Socket,
  first: Buffer,
  check: (head: RequestHead) => RequestVerdict | Promise<RequestVerdict>,
): Promise<InspectedRelayResult> {
  return new Promise((resolve) => {
    const framer = new RequestFramer();
    let requests = 0;
    let refused: InspectedRelayResult['refused'];
    /** Framed items not yet forwarded, in order. */
    const queue: Framed[] = [];
    let checking = false;
    let clientEnded = false;

    const cut = (why: NonNullable<InspectedRelayResult['refused']>) => {
      refused = why;
      queue.length = 0;
      client.off('data', feed);
      client.resetAndDestroy();
      upstream.resetAndDestroy();
    };
    const alive = () => !refused && !client.destroyed && !upstream.destroyed;
    async function pump(): Promise<void> {
      if (checking) return;
      while (queue.length && !refused) {
        const item = queue.shift()!;
        if (item.kind === 'error') return cut({ reason: item.reason, request: item.inHead ? requests + 1 : requests, host: undefined, framing: true });
        if (item.kind === 'request') {
          requests++;
          let verdict = check(item.head);
          if (verdict instanceof Promise) {
            checking = true;
            client.pause();
            verdict = await verdict;
            checking = false;
            if (!alive()) return;
            if (!upstream.writableNeedDrain) client.resume();
          }
          if (!verdict.ok) return cut({ reason: verdict.reason, request: requests, host: item.head.name });
        }
        // The rest of this batch is already in memory; pausing bounds the next.
        if (!upstream.write(item.bytes)) client.pause();
      }
      if (clientEnded && !refused && !upstream.writableEnded) upstream.end();
    }
    function feed(chunk: Buffer): void {
      queue.push(...framer.push(chunk));
      void pump();
    }

    closeTogether(client, upstream, (reset) =>
      resolve({ up: upstream.bytesWritten, down: client.bytesWritten, reset: reset && !refused, requests, ...(refused ? { refused } : {}) }),
    );
    upstream.on('drain', () => {
      if (!checking) client.resume();
    });
    const onEnd = () => {
      clientEnded = true;
      void pump();
    };
    client.on('end', onEnd);
    // Responses go back as the plain relay's bytes do (an end included).
    forward(upstream, client);
    feed(first);
    if (refused) return;
    // An end seen while the first bytes were read is not seen again.
    if (client.readableEnded) onEnd();
    client.on('data', feed);
    if (!checking) client.resume();
  });
}
