/**
 * Bounds on what a server keeps open (accel proxy, echo, relay): a maximum
 * number of connections, past which a new one is reset at once and counted,
 * and an idle timeout, after which a connection on which no byte moved
 * either way is closed.
 *
 * Whether bytes moved is asked of the kernel as well as of node. The bytes
 * of a spliced connection move in the kernel (SK_SKB) and node sees none of
 * them, so a busy spliced pair looks silent to node; its sockets' tcp_info
 * counters (bytes received, bytes acknowledged) grow with every byte that
 * gets through. The bytes of a socket on the sk_msg fast path skip TCP
 * (tcp_info stays still) but pass through node, which relays such sockets:
 * node's own counters grow then. A connection is idle when neither moved
 * on any of its sockets.
 */
import type net from 'node:net';
import { log } from '../log.js';
import { nodeSocketFd } from '../sys/node-internals.js';
import { tcpBytesMoved } from '../sys/socket.js';

/** At most `max` connections open (0: no limit). */
export class ConnectionLimit {
  private full = false;

  constructor(
    private readonly max: number,
    private readonly server: string,
  ) {}

  /**
   * May `sock` stay, with `open` connections open before it? If not it is
   * reset at once and false returned (the caller counts it). The first
   * refusal after the limit is reached is logged, and so is the first
   * connection taken again.
   */
  admit(sock: net.Socket, open: number): boolean {
    if (this.max === 0 || open < this.max) {
      if (this.full) {
        this.full = false;
        log.info(`${this.server}: below ${this.max} connections again, taking new ones`);
      }
      return true;
    }
    if (!this.full) {
      this.full = true;
      log.warn(`${this.server}: ${open} connections open, the maximum (--max-connections): refusing new ones`);
    }
    sock.on('error', () => {});
    sock.resetAndDestroy();
    return false;
  }
}

/** One connection under watch: more of its sockets may join it. */
export interface IdleWatch {
  add(sock: net.Socket): void;
}

interface Watched extends IdleWatch {
  label: string;
  /** Each open socket and what had moved on it at the last look. */
  moved: Map<net.Socket, bigint>;
  /** When a byte was last seen moving (or the connection was watched). */
  since: number;
}

/** Bytes through the socket so far, in the kernel or in node. */
function bytesMoved(sock: net.Socket): bigint {
  const inNode = BigInt(sock.bytesRead + sock.bytesWritten);
  const fd = nodeSocketFd(sock);
  if (fd === null) return inNode;
  try {
    return tcpBytesMoved(fd) + inNode;
  } catch {
    return inNode; // not TCP any more (closed under us): node's count is all
  }
}

/**
 * Closes connections on which nothing moved for `timeoutMs` (0: never). It
 * looks every quarter of the timeout (at most every 5 s), so a connection
 * is closed between timeoutMs and timeoutMs plus that period after its last
 * byte. Closing one destroys all its sockets; `onIdle` is told its label.
 */
export class IdleTimeout {
  private readonly watched = new Set<Watched>();
  private timer: NodeJS.Timeout | null = null;
  private readonly periodMs: number;

  constructor(
    private readonly timeoutMs: number,
    private readonly onIdle: (label: string) => void,
  ) {
    this.periodMs = Math.min(5000, Math.max(10, Math.floor(timeoutMs / 4)));
  }

  /** Watch the connection made of `sockets` (more may join it) until all
   * its sockets have closed. */
  watch(label: string, ...sockets: net.Socket[]): IdleWatch {
    const w: Watched = {
      label,
      moved: new Map(),
      since: Date.now(),
      add: (sock) => {
        if (this.timeoutMs === 0 || sock.destroyed || w.moved.has(sock)) return;
        w.moved.set(sock, bytesMoved(sock));
        w.since = Date.now();
        sock.once('close', () => {
          w.moved.delete(sock);
          if (!w.moved.size) this.watched.delete(w);
        });
        this.watched.add(w);
        this.timer ??= setInterval(() => this.sweep(), this.periodMs).unref();
      },
    };
    for (const s of sockets) w.add(s);
    return w;
  }

  private sweep(): void {
    const now = Date.now();
    for (const w of this.watched) {
      let moved = false;
      for (const [sock, before] of w.moved) {
        const n = bytesMoved(sock);
        if (n !== before) {
          w.moved.set(sock, n);
          moved = true;
        }
      }
      if (moved) w.since = now;
      else if (now - w.since >= this.timeoutMs) {
        this.watched.delete(w);
        for (const sock of w.moved.keys()) sock.destroy();
        this.onIdle(w.label);
      }
    }
    if (!this.watched.size) this.stop();
  }

  /** Stop watching (the server is stopping): nothing more is closed. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.watched.clear();
  }
}
