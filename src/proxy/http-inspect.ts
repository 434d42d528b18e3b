/**
 * Relaying an HTTP/1 connection whose policy decides by Host: the client's
 * bytes go upstream one request at a time, each request head checked before
 * it is written, because a keep-alive connection may ask for another Host
 * in its next request. The first request the check refuses, or the first
 * bytes the framer cannot follow, reset both sides; what was sent before
 * stays sent. Responses go back untouched.
 */
import type net from 'node:net';
import { RequestFramer } from './http-framing.js';
import type { RequestHead } from './http-head.js';
import { type RelayResult, closeTogether } from '../stream/relay.js';

export type RequestVerdict = { ok: true } | { ok: false; reason: string };

export interface InspectedRelayResult extends RelayResult {
  requests: number;
  /** Why the connection was cut, and at which request (1-based); framing:
   * the bytes could not be framed as every server would (not the check). */
  refused?: { reason: string; request: number; host: string | undefined; framing?: true };
}

/** `first`: bytes already read from the client (they are framed too). */
export function relayInspected(client: net.Socket, upstream: net.Socket, first: Buffer, check: (head: RequestHead) => RequestVerdict): Promise<InspectedRelayResult> {
  return new Promise((resolve) => {
    const framer = new RequestFramer();
    let requests = 0;
    let refused: InspectedRelayResult['refused'];

    const cut = (why: NonNullable<InspectedRelayResult['refused']>) => {
      refused = why;
      client.off('data', feed);
      client.resetAndDestroy();
      upstream.resetAndDestroy();
    };
    function feed(chunk: Buffer): void {
      for (const item of framer.push(chunk)) {
        if (item.kind === 'error') return cut({ reason: item.reason, request: item.inHead ? requests + 1 : requests, host: undefined, framing: true });
        if (item.kind === 'request') {
          requests++;
          const verdict = check(item.head);
          if (!verdict.ok) return cut({ reason: verdict.reason, request: requests, host: item.head.name });
        }
        // The rest of this batch is already in memory; pausing bounds the next.
        if (!upstream.write(item.bytes)) client.pause();
      }
    }

    closeTogether(client, upstream, (reset) =>
      resolve({ up: upstream.bytesWritten, down: client.bytesWritten, reset: reset && !refused, requests, ...(refused ? { refused } : {}) }),
    );
    upstream.on('drain', () => client.resume());
    client.on('end', () => upstream.end());
    upstream.pipe(client);
    feed(first);
    if (refused) return;
    // An end seen while the first bytes were read is not seen again.
    if (client.readableEnded) upstream.end();
    if (upstream.readableEnded) client.end();
    client.on('data', feed);
    client.resume();
  });
}
