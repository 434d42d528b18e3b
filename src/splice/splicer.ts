/**
 * Handing a pair of connected sockets to the kernel (sksplice.c), so that
 * each side's incoming bytes leave through the other side without this
 * process reading them, and what is left to do in user space: forwarding a
 * half-close or a reset, and cleaning up.
 *
 * The hand-off keeps the byte order and loses nothing:
 *  1. Node stops reading both sockets; what it already buffered is taken.
 *  2. SO_RCVLOWAT is raised on both, so that bytes arriving from now on
 *     wait in the receive queue instead of waking anyone, the verdict
 *     program included; never so high that TCP grows the receive buffer
 *     for it (holdInQueue).
 *  3. The bytes user space holds (the peeked first bytes, what step 1
 *     took) are written to the other side and flushed into its send queue.
 *     Only these: reading the receive queues out as well let a fast sender
 *     keep the hand-off reading (all of a 64 MB stream once), and writing
 *     that much while neither socket was read deadlocked against an echo
 *     whose replies filled the unread side.
 *  4. Each socket enters the SOCKHASH of destinations under its peer's
 *     cookie; then each enters the SOCKHASH of active sockets, where the
 *     verdict program runs on it and already finds its destination.
 *  5. SO_RCVLOWAT goes back to 1, which makes TCP call the data-ready
 *     callback: the verdict program now takes everything queued, in order,
 *     then every later byte. A buffer node had read in part is handed over
 *     whole, but the verdict starts at copied_seq and cuts what lies before
 *     it (accel_repeat.h).
 * A half-close is forwarded only once every byte the half-closing side
 * received has entered the other side's send stream (tcp_info and the
 * send queue's length), so a FIN never overtakes data: it waits for them as
 * long as the connection lives (a peer that does not read holds them up, as
 * it would hold up TCP's own FIN). A direction that cannot be completed (a
 * side reset, or closed by its owner) ends with a reset, never with a clean
 * end after missing bytes. A pair the maps have no room for (or refuse: a
 * FIN came in between) is relayed in user space.
 */
import type net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { nodeSocketFd, stopReading } from '../sys/node-internals.js';
import { closeSocket, dupSocket, rcvLowatWithinBuffer, resetOnClose, setRcvLowat, shutdownWrite, socketCookie, tcpClosed, tcpEstablished, tcpStreamCounts } from '../sys/socket.js';
import { AccelError, ErrorCodes, isAccelError } from '../errors.js';
import { relay } from '../stream/relay.js';
import { log } from '../log.js';
import type { SpliceMaps } from '../maps/splice.js';
import { type HoldableSide, SpliceHolds } from './holds.js';

/** Make TCP keep arriving bytes in `fd`'s receive queue instead of calling
 * the data-ready callback (the verdict, or node) for each: a low-water mark
 * as high as the receive buffer allows without making TCP grow it. */
function holdInQueue(fd: number): void {
  setRcvLowat(fd, rcvLowatWithinBuffer(fd));
}

function fdOf(sock: net.Socket): number {
  const fd = nodeSocketFd(sock);
  if (fd === null) throw new AccelError(ErrorCodes.INTERNAL, 'socket has no file descriptor to splice');
  return fd;
}

/** Stop node reading from the socket; return what it had buffered. */
function quiesce(sock: net.Socket): Buffer {
  sock.pause();
  const chunks: Buffer[] = [];
  while (sock.readableLength > 0) {
    const c = sock.read() as Buffer | null;
    if (c === null) break;
    chunks.push(c);
  }
  // Stop libuv before the event loop runs again (read() may have started
  // it), so that resume() starts reading again once the kernel owns the
  // data path.
  stopReading(sock);
  return Buffer.concat(chunks);
}

/** The map takes only established sockets: this one got a FIN meanwhile. */
function refusedByMap(err: unknown): boolean {
  return isAccelError(err) && (err.errno === 'EOPNOTSUPP' || err.errno === 'ENOTSUP');
}

/** The map is full (or the kernel has no memory for another entry). */
function mapFull(err: unknown): boolean {
  return isAccelError(err) && (err.errno === 'E2BIG' || err.errno === 'ENOMEM');
}

function flush(sock: net.Socket, data: Buffer): Promise<void> {
  if (!data.length) return Promise.resolve();
  return new Promise((resolve, reject) => sock.write(data, (err) => (err ? reject(err) : resolve())));
}

async function relayInUserSpace(a: net.Socket, b: net.Socket): Promise<SpliceResult> {
  const r = await relay(a, b);
  return { aToB: r.up, bToA: r.down, reset: r.reset, inKernel: false };
}

function echoInUserSpace(a: net.Socket): Promise<SpliceResult> {
  return new Promise((resolve) => {
    let reset = false;
    a.on('error', (err: NodeJS.ErrnoException) => {
      reset = reset || err.code === 'ECONNRESET';
    });
    a.once('close', () => resolve({ aToB: a.bytesWritten, bToA: a.bytesWritten, reset, inKernel: false }));
    a.pipe(a);
    if (a.readableEnded) a.end();
  });
}

/** The splice object of this process (SpliceAttachment): its maps, and
 * taking sockets out of the verdict's map safely. */
export interface SpliceKernel {
  maps: SpliceMaps;
  takeOut(cookies: readonly bigint[]): Set<bigint>;
}

export interface SpliceOptions {
  /** A half-close still waiting this long for the bytes before it is
   * logged, once. It goes on waiting: the FIN never overtakes them. */
  halfCloseWarnMs: number;
}

export interface SpliceResult {
  /** Bytes a -> b and b -> a, user-space and kernel together. */
  aToB: number;
  bToA: number;
  reset: boolean;
  /** false: relayed in user space (a map had no room, or a side was no
   * longer established at the hand-off). */
  inKernel: boolean;
}

interface Side {
  sock: net.Socket;
  /** Our own descriptor of the socket (a dup of node's): it keeps the
   * socket, and the bytes it still has to pass on, alive after node closes
   * its descriptor, until this side's data is through. */
  fd: number;
  cookie: bigint;
  peer: Side;
  /** tcpStreamCounts().sendStream less the bytes node wrote, at the
   * hand-off: 1 (the SYN) on the side that connected, else 0. */
  streamBase: bigint;
}

/** Nothing writes to the sockets during the hand-off, so a reading that
 * no ACK disturbed is exact (one that was is only a lower bound). */
function streamBase(s: Side): bigint {
  let c = tcpStreamCounts(s.fd);
  for (let i = 0; i < 100 && !c.steady; i++) c = tcpStreamCounts(s.fd);
  if (!c.steady) log.debug('send queue kept moving while its stream was read');
  return c.sendStream - BigInt(s.sock.bytesWritten);
}

/** What entered the side's send stream since the hand-off: the bytes node
 * wrote to it and those the kernel redirected to it. */
function streamSinceHandOff(s: Side): bigint {
  return tcpStreamCounts(s.fd).sendStream - s.streamBase;
}

export class KernelSplicer {
  /** Sockets held back while their destination does not keep up. */
  readonly holds: SpliceHolds;

  readonly maps: SpliceMaps;

  constructor(
    kernel: SpliceKernel,
    private readonly o: SpliceOptions = { halfCloseWarnMs: 30_000 },
  ) {
    this.maps = kernel.maps;
    this.holds = new SpliceHolds(kernel.maps, (cookies) => kernel.takeOut(cookies));
  }

  /** How SpliceHolds holds `s` back: out of the verdict's map, and not read
   * by node either (what node read goes to the peer first), so its bytes
   * wait in its own receive queue. */
  private holdable(s: Side): HoldableSide {
    // What node had read when it stopped: it goes to the peer first.
    let buffered: Buffer = Buffer.alloc(0);
    // Paused already (the peer's buffer full, watch()): its 'drain' resumes it.
    let wasPaused = false;
    return {
      cookie: s.cookie,
      prepareHold: () => {
        if (s.sock.destroyed || s.sock.readableEnded) return false;
        wasPaused = s.sock.isPaused();
        buffered = quiesce(s.sock);
        return true;
      },
      settleHold: (taken) => {
        if (buffered.length && !s.peer.sock.destroyed) s.peer.sock.write(buffered);
        buffered = Buffer.alloc(0);
        if (!taken && !wasPaused && !s.sock.destroyed) s.sock.resume();
      },
      release: () => {
        try {
          this.maps.activate(s.cookie, s.fd);
          // Data-ready: the verdict takes what queued meanwhile, in order.
          setRcvLowat(s.fd, 1);
        } catch (err) {
          // No longer established (a FIN came): node relays the rest.
          if (!refusedByMap(err)) log.debug(`spliced socket back to the verdict: ${(err as Error).message}`);
        }
        if (!s.sock.destroyed) s.sock.resume();
      },
      destination: () => ({
        fd: s.peer.fd,
        inKernel: this.maps.redirectedFrom(s.cookie) - (streamSinceHandOff(s.peer) - BigInt(s.peer.sock.bytesWritten)),
      }),
    };
  }

  /**
   * Splice a and b (b === a for an echo). `toB` is data user space already
   * took from a and owes to b. Resolves once both sockets are closed;
   * their map entries are gone by then. Rejects, with both sockets
   * destroyed, when the hand-off fails for a reason other than a FIN.
   */
  async splice(a: net.Socket, b: net.Socket, toB: Buffer = Buffer.alloc(0)): Promise<SpliceResult> {
    try {
      return await this.handOff(a, b, toB);
    } catch (err) {
      a.destroy();
      b.destroy();
      throw err;
    }
  }

  private async handOff(a: net.Socket, b: net.Socket, toB: Buffer): Promise<SpliceResult> {
    const echo = a === b;
    const sa = { sock: a, fd: dupSocket(fdOf(a)), cookie: 0n, streamBase: 0n } as Side;
    const sb = echo ? sa : ({ sock: b, fd: dupSocket(fdOf(b)), cookie: 0n, streamBase: 0n } as Side);
    sa.peer = sb;
    sb.peer = sa;
    const sides = echo ? [sa] : [sa, sb];

    const held = sides.map((s) => quiesce(s.sock));
    for (const s of sides) holdInQueue(s.fd);

    // Back to node: normal readiness, our descriptors closed.
    const release = () => {
      for (const s of sides) {
        setRcvLowat(s.fd, 1);
        closeSocket(s.fd);
      }
    };
    await flush(sb.sock, Buffer.concat([toB, held[0] ?? Buffer.alloc(0)]));
    if (!echo) await flush(sa.sock, held[1] ?? Buffer.alloc(0));
    const inUserSpace = (why: string) => {
      log.debug(`${why}: relaying in user space`);
      return echo ? echoInUserSpace(a) : relayInUserSpace(a, b);
    };
    // The kernel takes only ESTABLISHED sockets. One that already got its
    // peer's FIN (CLOSE_WAIT) is relayed in user space.
    if (!sides.every((s) => tcpEstablished(s.fd))) {
      release();
      return inUserSpace('socket no longer established');
    }
    for (const s of sides) {
      s.cookie = socketCookie(s.fd);
      s.streamBase = streamBase(s);
    }
    // Removing what is not there is a no-op: safe after any partial step.
    const abandon = () => {
      for (const s of sides) {
        this.maps.unlink(s.cookie);
        this.maps.untrack(s.cookie);
      }
      release();
    };
    // Tracked, then destinations. No program runs on either map, so when
    // one refuses a socket (a FIN came in between) or is full, the pair
    // leaves them again with every byte still in its receive queues, and
    // user space relays it: a full map costs speed, never the connection.
    try {
      for (const s of sides) this.maps.track(s.cookie);
      for (const s of sides) this.maps.link(s.cookie, s.peer.fd);
    } catch (err) {
      abandon();
      if (refusedByMap(err)) return inUserSpace('socket no longer established');
      if (mapFull(err)) return inUserSpace(`splice maps full (${(err as AccelError).errno})`);
      throw err;
    }
    // Then the verdict, socket by socket, each finding its destination in
    // place. One refused here (a FIN in between, or the map full) keeps its
    // bytes in its own queue; watch() relays them like bytes the kernel
    // passed up, while the other direction stays in the kernel.
    let active = 0;
    for (const s of sides) {
      try {
        this.maps.activate(s.cookie, s.fd);
        active++;
      } catch (err) {
        if (refusedByMap(err) || mapFull(err)) continue;
        abandon();
        throw err;
      }
    }
    if (active === 0) {
      abandon();
      return inUserSpace('no socket of the pair entered the verdict map');
    }
    this.maps.add('pairs_spliced');
    const holdables = sides.map((s) => this.holdable(s));
    for (const h of holdables) this.holds.add(h);
    for (const s of sides) setRcvLowat(s.fd, 1);
    return this.watch(sides, holdables);
  }

  /** Until both directions are through: forward half-closes and resets,
   * relay the rare bytes the kernel passed up instead of redirecting; then
   * close our descriptors, which takes the sockets out of the map. */
  private watch(sides: Side[], holdables: HoldableSide[]): Promise<SpliceResult> {
    return new Promise((resolve) => {
      let reset = false;
      let directions = sides.length;
      const counted = new Map<Side, number>();
      const finish = () => {
        for (const h of holdables) this.holds.remove(h);
        for (const s of sides) {
          counted.set(s, Number(this.maps.redirectedFrom(s.cookie)) + s.peer.sock.bytesWritten);
          this.maps.untrack(s.cookie);
          closeSocket(s.fd);
        }
        this.maps.add('pairs_closed');
        const [first, second] = sides;
        const aToB = first ? (counted.get(first) ?? 0) : 0;
        resolve({ aToB, bToA: second ? (counted.get(second) ?? 0) : aToB, reset, inKernel: true });
      };
      sides.forEach((s, i) => {
        const from = s;
        const to = s.peer;
        const held = holdables[i] as HoldableSide;
        let through = false;
        const directionDone = () => {
          if (through) return;
          through = true;
          if (--directions === 0) finish();
        };
        // This direction stops short of its end: `to`'s peer must see a
        // reset, not the clean end that closing our descriptor would send.
        const cut = () => {
          if (through) return;
          abortSide(to);
        };
        from.sock.on('data', (chunk: Buffer) => {
          // Bytes that reached this socket's own queue (a redirect that
          // could not happen): still delivered, by user space, which stops
          // reading while the other side's buffer is full.
          if (!to.sock.destroyed && !to.sock.write(chunk)) {
            from.sock.pause();
            to.sock.once('drain', () => {
              if (!this.holds.isHeld(held)) from.sock.resume();
            });
          }
        });
        from.sock.on('end', () => {
          // Already counted as through (`to` closed first): our descriptors
          // may be closed by now and their numbers reused by other sockets,
          // so nothing may be done through them; `to` is gone anyway.
          if (through) return;
          this.holds.releaseNow(held);
          void this.forwardEnd(from, to).finally(directionDone);
        });
        from.sock.on('error', (err: NodeJS.ErrnoException) => {
          log.debug(`spliced socket: ${err.code ?? err.message}`);
          reset = reset || err.code === 'ECONNRESET' || err.code === 'EPIPE';
          if (!to.sock.destroyed) to.sock.resetAndDestroy();
          for (const x of sides) x.sock.destroy();
        });
        // Closed without its end coming through (an error, a reset, or the
        // owner shutting down): nothing more will pass this way.
        from.sock.once('close', () => {
          if (from.sock.readableEnded) return;
          cut();
          directionDone();
        });
        to.sock.once('close', () => {
          if (from.sock.readableEnded) return;
          cut();
          directionDone();
        });
        from.sock.resume();
        // A half-close that came before the hand-off.
        if (from.sock.readableEnded) void this.forwardEnd(from, to).finally(directionDone);
      });
    });
  }

  /**
   * `from` half-closed: end `to` once `to`'s send stream holds every byte
   * `from` received before its FIN (the bytes user space wrote plus those
   * the kernel redirected). What `from` received is final at this point and
   * read at once (node may close `from` meanwhile). While bytes are owed,
   * each round re-arms `from`'s data-ready callback in case some still
   * wait in its receive queue.
   *
   * There is no deadline: bytes still owed are in the kernel (in `from`'s
   * receive queue or `to`'s psock), and they move when `to`'s peer reads;
   * until then TCP itself would keep its FIN behind them. The wait ends
   * without a FIN only when `to` can no longer take them (reset, closed by
   * its owner), and then `to`'s peer gets a reset.
   */
  private async forwardEnd(from: Side, to: Side): Promise<void> {
    let target: bigint;
    try {
      target = tcpStreamCounts(from.fd).received - 1n;
    } catch {
      // What must go first is unknown: never a clean end.
      abortSide(to);
      return;
    }
    const started = Date.now();
    let warned = false;
    let wait = 1;
    for (;;) {
      let owed: bigint;
      let gone: boolean;
      try {
        owed = target - streamSinceHandOff(to);
        gone = to.sock.destroyed || tcpClosed(to.fd);
      } catch {
        abortSide(to); // `to` went away meanwhile
        return;
      }
      if (owed <= 0n && (to.sock.destroyed || to.sock.writableLength === 0)) break;
      if (gone) {
        log.debug(`half-close not forwarded: the peer socket is gone with ${owed} bytes still owed to it; reset`);
        abortSide(to);
        return;
      }
      if (!warned && Date.now() - started > this.o.halfCloseWarnMs) {
        warned = true;
        log.warn(`a half-close has waited ${Date.now() - started} ms for ${owed} bytes its peer has not taken yet; it follows them`);
      }
      if (!from.sock.destroyed) {
        try {
          setRcvLowat(from.fd, 1);
        } catch {
          /* closed meanwhile */
        }
      }
      await sleep(wait);
      // A peer that does not read may take long: poll less often then.
      wait = Math.min(wait * 2, warned ? 200 : 20);
    }
    // Through our descriptor: node may have closed its own already.
    shutdownWrite(to.fd);
    if (!to.sock.destroyed) to.sock.end();
  }
}

/** End `s` with a reset: at once through node if it still has the socket,
 * and in any case when our descriptor, the last one, closes. */
function abortSide(s: Side): void {
  try {
    resetOnClose(s.fd);
  } catch {
    /* already closed by the kernel (a reset came) */
  }
  if (!s.sock.destroyed) s.sock.resetAndDestroy();
}
