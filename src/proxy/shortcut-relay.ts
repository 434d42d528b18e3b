/**
 * What accel proxy still does for a connection that has a shortcut
 * (bpf/include/accel_shortcut.h): it relays whatever reaches its sockets
 * (the bytes sent before the shortcut was taken, and those sent while it is
 * left: the hand-off, a destination that does not read), counting per
 * direction the bytes it has written into the other socket, which the
 * shortcut waits for; it forwards a half-close after those bytes and a
 * reset at once. Once both directions take the shortcut its sockets are
 * idle until the close.
 */
import type net from 'node:net';
import { type RelayResult, closeTogether } from '../stream/relay.js';
import type { ShortcutPlan } from './shortcut-maps.js';

/** Relay `from` into `to` (first `initial`), telling `relayed` the running
 * count of bytes the kernel has taken from `to` each time it grew. At once:
 * the sender waits for it to take the shortcut again, and a write Node
 * completes synchronously (the usual case) calls its callback only on the
 * next tick, by which time the other side may have answered and the sender
 * sent again. So the count is read after each write as well: what was
 * given to `to` less what Node still holds (writableLength). */
function direction(from: net.Socket, to: net.Socket, initial: Buffer, relayed: (n: bigint) => void): void {
  let given = 0n;
  let told = 0n;
  let waiting = false;
  const tell = () => {
    const taken = given - BigInt(to.writableLength);
    if (taken > told) {
      told = taken;
      relayed(taken);
    }
  };
  const send = (chunk: Buffer) => {
    given += BigInt(chunk.length);
    const ok = to.write(chunk, (err) => {
      if (!err) tell();
    });
    tell();
    if (!ok && !waiting) {
      waiting = true;
      from.pause();
      to.once('drain', () => {
        waiting = false;
        from.resume();
      });
    }
  };
  if (initial.length) send(initial);
  from.on('data', send);
  from.on('end', () => to.end());
  if (from.readableEnded) to.end();
  else from.resume();
}

/** Relay client <-> upstream for a connection whose shortcut `plan` is
 * installed; resolves once both sockets are closed, its entries removed. */
export function relayBesideShortcut(client: net.Socket, upstream: net.Socket, first: Buffer, plan: ShortcutPlan): Promise<RelayResult> {
  return new Promise((resolve) => {
    closeTogether(client, upstream, (reset) => {
      plan.end();
      resolve({ up: upstream.bytesWritten, down: client.bytesWritten, reset });
    });
    direction(client, upstream, first, (n) => plan.relayed(0, n));
    direction(upstream, client, Buffer.alloc(0), (n) => plan.relayed(1, n));
  });
}
