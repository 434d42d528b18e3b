/**
 * Bounds on what a server keeps open (accel proxy, echo, relay): a maximum
 * number of connections, and of connections from one source, past which a
 * new one is reset at once and counted, and an idle timeout, after which a connection on which no byte moved
 * either way is closed.
 *
 * Whether bytes moved is asked of the kernel as well as of node. The bytes
 * of a spliced connection move in the kernel (SK_SKB) and node sees none of
 * them, so a busy spliced pair looks silent to node; its sockets' tcp_info
 * counters (bytes received, bytes acknowledged) grow with every byte that
 * gets through. The bytes of a socket on the sk_msg fast path skip TCP
 * (tcp_info stays still) but pass through node, which relays such sockets:
 * node's own counters grow then. The bytes of an accel proxy shortcut move
 * from the client's socket to the server's (or, egress, onto the proxy's
 * upstream socket) by sk_msg, past the proxy's own sockets: the kernel
 * counts them in the shortcut's map entries, which the proxy adds to the
 * connection (IdleWatch.count). A connection is idle when none of these
 * moved.
 */
import net from 'node:net';
import { log } from '../log.js';
import { nodeSocketFd } from '../sys/node-internals.js';
import { tcpBytesMoved } from '../sys/socket.js';

export type Admission = { ok: true } | { ok: false; why: 'total' | 'source' };

/**
 * The key of a client's source: its IPv4 address, or the /64 of its IPv6
 * address (one host holds a whole /64 and may use any address in it). An
 * IPv4-mapped address counts as the IPv4 one.
 */
export function sourceKey(address: string | undefined): string {
  if (!address || !net.isIP(address)) return '?';
  if (net.isIPv4(address)) return address;
  const groups = ipv6Groups(address);
  const mapped = groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
  if (mapped) return [groups[6]! >> 8, groups[6]! & 0xff, groups[7]! >> 8, groups[7]! & 0xff].join('.');
  return `${groups
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(':')}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address (`::` and a dotted
 * IPv4 tail expanded). */
function ipv6Groups(address: string): number[] {
  const parse = (part: string): number[] =>
    part === ''
      ? []
      : part.split(':').flatMap((g) => {
          if (!g.includes('.')) return [parseInt(g, 16)];
          const o = g.split('.').map(Number);
          return [(o[0]! << 8) | o[1]!, (o[2]! << 8) | o[3]!];
        });
  const [head = '', tail] = address.split('::');
  const h = parse(head);
  const t = tail === undefined ? [] : parse(tail);
  return [...h, ...Array<number>(8 - h.length - t.length).fill(0), ...t];
}

/** At most `max` connections open, at most `perSource` of them from one
 * source (see sourceKey); 0: no limit. */
export class ConnectionLimit {
  private full = false;
  /** Open connections per source; a source leaves with its last one. */
  private readonly bySource = new Map<string, number>();
  /** Sources refused since they reached perSource (logged once each). */
  private readonly sourcesFull = new Set<string>();

  constructor(
    private readonly max: number,
    private readonly server: string,
    private readonly perSource = 0,
  ) {}

  /**
   * May `sock` stay, with `open` connections open before it? If not it is
   * reset at once and the reason returned (the caller counts it). The first
   * refusal after a limit is reached is logged (per source for the
   * per-source limit), and so is the first connection taken again.
   */
  admit(sock: net.Socket, open: number): Admission {
    const key = this.perSource ? sourceKey(sock.remoteAddress) : '';
    if (this.max !== 0 && open >= this.max) {
      if (!this.full) {
        this.full = true;
        log.warn(`${this.server}: ${open} connections open, the maximum (--max-connections): refusing new ones`);
      }
      return refuse(sock, 'total');
    }
    if (this.full) {
      this.full = false;
      log.info(`${this.server}: below ${this.max} connections again, taking new ones`);
    }
    if (!this.perSource) return { ok: true };
    const n = this.bySource.get(key) ?? 0;
    if (n >= this.perSource) {
      if (!this.sourcesFull.has(key)) {
        this.sourcesFull.add(key);
        log.warn(`${this.server}: ${n} connections open from ${key}, the maximum per source (--max-connections-per-source): refusing its new ones`);
      }
      return refuse(sock, 'source');
    }
    this.sourcesFull.delete(key);
    this.bySource.set(key, n + 1);
    sock.once('close', () => {
      const left = (this.bySource.get(key) ?? 1) - 1;
      if (left > 0) this.bySource.set(key, left);
      else {
        this.bySource.delete(key);
        this.sourcesFull.delete(key);
      }
    });
    return { ok: true };
  }

  /** Connections open from `address`'s source (as admitted here). */
  openFrom(address: string): number {
    return this.bySource.get(sourceKey(address)) ?? 0;
  }
}

function refuse(sock: net.Socket, why: 'total' | 'source'): Admission {
  sock.on('error', () => {});
  sock.resetAndDestroy();
  return { ok: false, why };
}

/** One connection under watch: more of its sockets may join it. */
export interface IdleWatch {
  add(sock: net.Socket): void;
  /** Bytes of the connection that move where none of its sockets shows
   * them (a shortcut's, in the kernel): `bytes` returns a count that grows
   * with them, read at each look; a change is movement, and so is a read
   * that fails (nothing is closed for want of a count). */
  count(bytes: () => bigint): void;
  /** Called just before an idle close destroys the sockets. */
  beforeClose(fn: () => void): void;
}

interface Counter {
  bytes: () => bigint;
  /** At the last look (null: not looked at yet). */
  last: bigint | null;
}

interface Watched extends IdleWatch {
  label: string;
  /** Each open socket and what had moved on it at the last look (null:
   * not looked at yet). */
  moved: Map<net.Socket, bigint | null>;
  counters: Counter[];
  closing: (() => void) | null;
  /** When a byte was last seen moving (or the connection was watched). */
  since: number;
}

/** Has `c` moved since the last look (its count read now)? */
function counterMoved(c: Counter): boolean {
  let n: bigint;
  try {
    n = c.bytes();
  } catch {
    return true;
  }
  if (n === c.last) return false;
  c.last = n;
  return true;
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
 * looks every quarter of the timeout (at most every 5 s). A socket's count
 * is first read at the first look after it joins, not when it joins (most
 * connections are over before any look: a TCP_INFO read per socket cost the
 * proxy's connection rate), and that first look counts as movement; so a
 * connection is closed between timeoutMs and timeoutMs plus two periods
 * after its last byte. Closing one destroys all its sockets (after its
 * beforeClose); `onIdle` is told its label. A look that comes more than a
 * period late (the process did not run: a long GC pause, a starved CPU)
 * does not count that time as silence: what the process could not see
 * move, and could not relay, is not the connection's idleness.
 */
export class IdleTimeout {
  private readonly watched = new Set<Watched>();
  private timer: NodeJS.Timeout | null = null;
  private readonly periodMs: number;
  /** When the last look was, while looking. */
  private lastSweep: number | null = null;

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
      counters: [],
      closing: null,
      since: Date.now(),
      add: (sock) => {
        if (this.timeoutMs === 0 || sock.destroyed || w.moved.has(sock)) return;
        w.moved.set(sock, null);
        w.since = Date.now();
        sock.once('close', () => {
          w.moved.delete(sock);
          if (!w.moved.size) this.watched.delete(w);
        });
        this.watched.add(w);
        this.timer ??= setInterval(() => this.sweep(), this.periodMs).unref();
      },
      count: (bytes) => {
        w.counters.push({ bytes, last: null });
      },
      beforeClose: (fn) => {
        w.closing = fn;
      },
    };
    for (const s of sockets) w.add(s);
    return w;
  }

  private sweep(): void {
    const now = Date.now();
    const previous = this.lastSweep;
    const late = previous === null ? 0 : now - previous - this.periodMs;
    this.lastSweep = now;
    for (const w of this.watched) {
      // Only a connection that was there to be seen before the stall.
      if (previous !== null && late > this.periodMs && w.since <= previous) w.since = Math.min(w.since + late, now);
      let moved = false;
      for (const [sock, before] of w.moved) {
        const n = bytesMoved(sock);
        if (n !== before) {
          w.moved.set(sock, n);
          moved = true;
        }
      }
      for (const c of w.counters) if (counterMoved(c)) moved = true;
      if (moved) w.since = now;
      else if (now - w.since >= this.timeoutMs) {
        this.watched.delete(w);
        try {
          w.closing?.();
        } catch (err) {
          log.warn(`${w.label}: before the idle close: ${(err as Error).message}`);
        }
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
    this.lastSweep = null;
    this.watched.clear();
  }
}
