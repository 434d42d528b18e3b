/**
 * accel echo and accel relay: two servers whose data path is entirely the
 * kernel's. echo splices each accepted socket to itself; relay pairs each
 * client with the next one to connect and splices the two to each other.
 */
import net from 'node:net';
import { nodeSocketFd } from '../sys/node-internals.js';
import { tcpClosed } from '../sys/socket.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { log } from '../log.js';
import { closeGracefully } from '../stream/drain.js';
import { ConnectionLimit, IdleTimeout, type IdleWatch } from '../stream/limits.js';
import type { KernelSplicer } from './splicer.js';

export interface SpliceServerOptions {
  port: number;
  host: string;
  splicer: KernelSplicer;
  /** relay: how long a client may wait for its partner (0: forever). */
  pairTimeoutMs?: number;
  /** relay: bytes held for a waiting client before it is paused. */
  holdBytes?: number;
  /** Clients connected at once (a relay pair is two); one more is reset
   * (0: no limit). */
  maxConnections?: number;
  /** Of them, from one source address (IPv6: one /64) (0: no limit). */
  maxConnectionsPerSource?: number;
  /** Close a connection (a relay pair, or a client waiting alone) after
   * this long with no byte moving either way (0: never). */
  idleTimeoutMs?: number;
}

export interface SpliceServerStats {
  /** Clients taken in (refused ones are not). */
  accepted: number;
  /** Reset at once: maxConnections clients were connected, or
   * maxConnectionsPerSource from its source (counted in refusedPerSource too). */
  refused: number;
  refusedPerSource: number;
  /** Connections closed after idleTimeoutMs with nothing moving. */
  idleClosed: number;
  spliced: number;
  closed: number;
  abandoned: number;
  active: number;
}

abstract class SpliceServer {
  private server: net.Server | null = null;
  protected readonly open = new Set<net.Socket>();
  readonly stats: SpliceServerStats = { accepted: 0, refused: 0, refusedPerSource: 0, idleClosed: 0, spliced: 0, closed: 0, abandoned: 0, active: 0 };
  private readonly limit: ConnectionLimit;
  private readonly idle: IdleTimeout;

  constructor(protected readonly o: SpliceServerOptions) {
    this.limit = new ConnectionLimit(o.maxConnections ?? 0, `server on port ${o.port}`, o.maxConnectionsPerSource ?? 0);
    this.idle = new IdleTimeout(o.idleTimeoutMs ?? 0, (label) => {
      this.stats.idleClosed++;
      log.info(`closed ${label}: nothing moved for ${o.idleTimeoutMs} ms`);
    });
  }

  protected abstract accept(sock: net.Socket): void;

  /** Close the connection of `sock` once it is idle (a partner may join it). */
  protected watchIdle(sock: net.Socket): IdleWatch {
    return this.idle.watch(`client ${sock.remoteAddress ?? '?'} port ${sock.remotePort ?? 0}`, sock);
  }

  async start(): Promise<string> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (sock) => {
      const admission = this.limit.admit(sock, this.open.size);
      if (!admission.ok) {
        this.stats.refused++;
        if (admission.why === 'source') this.stats.refusedPerSource++;
        return;
      }
      this.stats.accepted++;
      this.open.add(sock);
      sock.once('close', () => this.open.delete(sock));
      sock.on('error', () => {});
      this.accept(sock);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          err.code === 'EADDRINUSE'
            ? new AccelError(ErrorCodes.ADDRESS_IN_USE, `port ${this.o.port} on ${this.o.host} is already in use`)
            : new AccelError(ErrorCodes.INTERNAL, `cannot listen on ${this.o.host}:${this.o.port}: ${err.message}`),
        ),
      );
      server.listen({ port: this.o.port, host: this.o.host, ipv6Only: false }, () => resolve());
    });
    server.on('error', (err) => log.error(`listener: ${err.message}`));
    this.server = server;
    const a = server.address() as net.AddressInfo;
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
  }

  protected async run(a: net.Socket, b: net.Socket, held?: Buffer): Promise<void> {
    this.stats.spliced++;
    this.stats.active++;
    try {
      const r = await this.o.splicer.splice(a, b, held);
      log.debug(`spliced pair closed: ${r.aToB} B one way, ${r.bToA} B the other${r.reset ? ', reset' : ''}`);
    } catch (err) {
      log.error(`splice failed: ${(err as Error).message}`);
      a.destroy();
      b.destroy();
    } finally {
      this.stats.active--;
      this.stats.closed++;
    }
  }

  /** Stop accepting, give open connections graceMs, then close them. */
  async stop(graceMs: number): Promise<void> {
    const servers = this.server ? [this.server] : [];
    this.server = null;
    await closeGracefully(servers, this.open, graceMs);
    this.idle.stop();
  }
}

export class EchoServer extends SpliceServer {
  protected accept(sock: net.Socket): void {
    this.watchIdle(sock);
    void this.run(sock, sock);
  }
}

interface Waiting {
  sock: net.Socket;
  idle: IdleWatch;
  chunks: Buffer[];
  size: number;
  timer: NodeJS.Timeout | null;
}

/** Is the connection over (reset), though node has not seen it? */
function gone(sock: net.Socket): boolean {
  if (sock.destroyed) return true;
  const fd = nodeSocketFd(sock);
  if (fd === null) return true;
  try {
    return tcpClosed(fd);
  } catch {
    return true;
  }
}

export class RelayServer extends SpliceServer {
  private waiting: Waiting | null = null;

  /** `w` waits no longer (paired or abandoned). */
  private take(w: Waiting): void {
    this.waiting = null;
    if (w.timer) clearTimeout(w.timer);
  }

  private abandon(w: Waiting): void {
    this.take(w);
    this.stats.abandoned++;
  }

  protected accept(sock: net.Socket): void {
    const w = this.waiting;
    if (w && gone(w.sock)) {
      // Reset after it half-closed: node, no longer reading, was not told.
      log.debug('the waiting relay client is gone: dropped');
      this.abandon(w);
      w.sock.destroy();
    } else if (w) {
      this.take(w);
      w.sock.removeAllListeners('data');
      w.sock.removeAllListeners('close');
      w.sock.once('close', () => this.open.delete(w.sock));
      // One connection from now on: idle only when neither client moves.
      w.idle.add(sock);
      void this.run(w.sock, sock, Buffer.concat(w.chunks));
      return;
    }
    // First of a pair: keep what it sends (bounded), and notice if it goes.
    const entry: Waiting = { sock, idle: this.watchIdle(sock), chunks: [], size: 0, timer: null };
    this.waiting = entry;
    const limit = this.o.holdBytes ?? 1 << 20;
    sock.on('data', (d: Buffer) => {
      entry.chunks.push(d);
      entry.size += d.length;
      if (entry.size >= limit) sock.pause();
    });
    sock.once('close', () => {
      this.open.delete(sock);
      if (this.waiting === entry) this.abandon(entry);
    });
    if (this.o.pairTimeoutMs) {
      entry.timer = setTimeout(() => {
        if (this.waiting !== entry) return;
        log.info('a relay client waited for a partner too long: closed');
        sock.destroy();
      }, this.o.pairTimeoutMs);
    }
    sock.resume();
  }
}
