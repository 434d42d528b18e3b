/**
 * accel's transparent proxy. Its listeners (127.0.0.1 and [::1], both
 * IP_TRANSPARENT) receive the connections tc_tproxy.c hands them; an
 * accepted socket's local address is the destination the client asked for.
 * Per connection: look at the first bytes when the policy needs them, decide,
 * connect upstream with the proxy mark, then relay (or, see splice, hand the
 * pair to the kernel; or, for HTTP decided by Host, check every request).
 */
import net from 'node:net';
import { type Family, closeSocket, transparentListener } from '../sys/socket.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { log } from '../log.js';
import type { Decision, Policy } from './policy.js';
import { type BindName, type NameFacts, chooseDataPath, decideWithBinding, factsOf, readFirstBytes } from './admission.js';
import { NameBinder } from './name-binding.js';
import { closeGracefully } from '../stream/drain.js';
import { ConnectionLimit, IdleTimeout } from '../stream/limits.js';
import { type RequestVerdict, relayInspected } from './http-inspect.js';
import { relay } from '../stream/relay.js';
import { connectUpstream } from './upstream.js';
import type { ShortcutKind, ShortcutMaps, ShortcutPlan } from './shortcut-maps.js';
import { socketLocalName } from '../sys/node-internals.js';

export interface ProxyOptions {
  port: number;
  policy: Policy;
  /** SO_MARK of upstream connections. */
  mark: number;
  families: Family[];
  connectTimeoutMs: number;
  /** How long to wait for the first bytes when the policy needs them. */
  sniffTimeoutMs: number;
  backlog: number;
  /** Hands an allowed, connected pair to the kernel instead of relaying;
   * null: always relay in user space. */
  splicer?: Splicer | null;
  /** Gives an allowed connection whose client and server are both on the
   * sk_msg fast path a shortcut between them (bpf/include/accel_shortcut.h);
   * null: never. */
  shortcuts?: ShortcutMaps | null;
  /** Is this socket of the proxy (accepted or upstream) on the sk_msg fast
   * path? A pair with one that is is never spliced. */
  onFastPath?: (sock: net.Socket) => boolean;
  /** Makes a new listening socket the one interception hands connections
   * to (the node's map of proxy listeners); it fails the start if it
   * throws. Called before the socket accepts anything. */
  register?: (fd: number, family: Family) => void;
  /** Marks a new upstream socket as the proxy's own before it connects
   * (the node's map of proxy sockets): interception never steers or
   * refuses its SYN. If it throws, the connection fails. Not called when
   * kernelOwnsSockets. */
  ownSocket?: (fd: number) => void;
  /** The kernel marks and records every TCP socket this process makes
   * (own-sockets.ts): upstream sockets are plain net sockets. */
  kernelOwnsSockets?: boolean;
  /** Client connections handled at once; one more is reset (0: no limit). */
  maxConnections?: number;
  /** Of them, from one source address (IPv6: one /64); one more from that
   * source is reset (0: no limit). */
  maxConnectionsPerSource?: number;
  /** Close a connection after this long with no byte moving either way
   * (0: never), wherever they move: through the proxy, spliced, or by a
   * shortcut. */
  idleTimeoutMs?: number;
  /** Longest wait for the resolver when a name is checked against the
   * destination (see name-binding.ts). */
  resolveTimeoutMs?: number;
  /** Listening sockets made (and registered) by another process, a
   * worker's (workers.ts): served as they are, instead of making them. */
  listeners?: { fd: number; family: Family }[];
  /** The worker this process is (--workers), named in its events. */
  worker?: number;
}

export interface Splicer {
  /** Resolves when both sockets are closed. */
  splice(client: net.Socket, upstream: net.Socket, firstBytes: Buffer): Promise<{ aToB: number; bToA: number; reset: boolean }>;
}

export interface ConnectionEvent {
  event: 'connection';
  source: string;
  destination: string;
  action: 'allow' | 'deny' | 'error';
  reason: string;
  sni?: string | undefined;
  host?: string | undefined;
  /** relay-fastpath: relayed because a hop (client or upstream) is on the
   * sk_msg fast path; inspect: HTTP relayed request by request, each Host checked;
   * shortcut: client and server send to each other directly (sk_msg). */
  mode?: 'relay' | 'splice' | 'relay-fastpath' | 'inspect' | 'shortcut';
  /** With mode shortcut: local (both ways, the server on this host) or
   * egress (the client's bytes sent on the proxy's upstream socket; the
   * server's answers through the proxy). */
  shortcut?: ShortcutKind;
  /** The worker that served it (--workers). */
  worker?: number;
}

export interface ProxyStats {
  /** Connections taken in (refused ones are not). */
  accepted: number;
  /** Reset at once: maxConnections were being handled, or
   * maxConnectionsPerSource from its source (counted in refusedPerSource too). */
  refused: number;
  refusedPerSource: number;
  /** Closed after idleTimeoutMs with nothing moving. */
  idleClosed: number;
  allowed: number;
  denied: number;
  failed: number;
  /** Allowed connections by data path: spliced in the kernel, given a
   * shortcut, relayed in user space (relay and relay-fastpath), inspected. */
  spliced: number;
  shortcut: number;
  relayed: number;
  inspected: number;
  active: number;
  /** Inspected connections cut at a later request the policy denies. */
  requestsDenied: number;
  /** Names (SNI, Host) checked against the destination, and of them those
   * that were not its (or could not be verified): the policy took them
   * as unknown. */
  namesChecked: number;
  namesUnverified: number;
  /** Inspected connections cut at a request whose framing servers might
   * read differently (a possible smuggled request), see http-head.ts. */
  framingRefused: number;
  /** Accepted connections that were this proxy's own upstream connections
   * steered back to it (a mark mismatch), refused. */
  loops: number;
}

/** Every counter at zero. */
export function zeroStats(): ProxyStats {
  return {
    accepted: 0,
    refused: 0,
    refusedPerSource: 0,
    idleClosed: 0,
    allowed: 0,
    denied: 0,
    failed: 0,
    spliced: 0,
    shortcut: 0,
    relayed: 0,
    inspected: 0,
    active: 0,
    requestsDenied: 0,
    namesChecked: 0,
    namesUnverified: 0,
    framingRefused: 0,
    loops: 0,
  };
}

/** An upstream socket of the proxy, for the loop guard. */
interface Upstream {
  sock: net.Socket;
  /** Its local endpoint as endpoint() writes it, once read. */
  local: string | null;
}

function endpoint(address: string | undefined, port: number | undefined): string {
  return address?.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

export class TransparentProxy {
  private servers: net.Server[] = [];
  private readonly open = new Set<net.Socket>();
  readonly stats: ProxyStats = zeroStats();
  private readonly ownEndpoints = new Set<string>();
  /** Open upstream sockets: those whose local endpoint is not read yet,
   * and the others by endpoint (see ownUpstream). */
  private readonly unreadUpstreams = new Set<Upstream>();
  private readonly upstreamsByLocal = new Map<string, Upstream>();
  private readonly limit: ConnectionLimit;
  private readonly idle: IdleTimeout;
  private readonly bindName: BindName;

  constructor(private readonly o: ProxyOptions) {
    const binder = new NameBinder({ timeoutMs: o.resolveTimeoutMs ?? 1000 });
    this.bindName = async (name, destination) => {
      const b = await binder.check(name, destination);
      this.stats.namesChecked++;
      if (!b.bound) this.stats.namesUnverified++;
      return b;
    };
    this.limit = new ConnectionLimit(o.maxConnections ?? 0, 'proxy', o.maxConnectionsPerSource ?? 0);
    this.idle = new IdleTimeout(o.idleTimeoutMs ?? 0, (label) => {
      this.stats.idleClosed++;
      log.info(`closed ${label}: nothing moved for ${o.idleTimeoutMs} ms`);
    });
  }

  /** Listen on every family it can; fails only if none works. */
  async start(): Promise<string[]> {
    const listening: string[] = [];
    const given = this.o.listeners;
    for (const family of given ? given.map((l) => l.family) : this.o.families) {
      const address = family === 4 ? '127.0.0.1' : '::1';
      let fd: number;
      const made = given?.find((l) => l.family === family);
      if (made) fd = made.fd;
      else {
        try {
          fd = transparentListener(family, address, this.o.port, this.o.backlog);
        } catch (err) {
          if (err instanceof AccelError && err.code === ErrorCodes.ADDRESS_IN_USE) {
            await this.stop(0);
            throw new AccelError(ErrorCodes.ADDRESS_IN_USE, `port ${this.o.port} on ${address} is already in use`);
          }
          log.warn(`no IPv${family} listener: ${(err as Error).message}`);
          continue;
        }
        try {
          this.o.register?.(fd, family);
        } catch (err) {
          closeSocket(fd);
          await this.stop(0);
          throw err;
        }
      }
      const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (sock) => {
        void this.handle(sock);
      });
      try {
        await new Promise<void>((resolve, reject) => {
          server.once('error', reject);
          server.listen({ fd }, () => resolve());
        });
      } catch (err) {
        closeSocket(fd);
        throw err;
      }
      server.on('error', (err) => log.error(`listener ${address}: ${err.message}`));
      this.servers.push(server);
      this.ownEndpoints.add(endpoint(address, this.o.port));
      listening.push(endpoint(address, this.o.port));
    }
    if (!listening.length) throw new AccelError(ErrorCodes.ADDRESS_IN_USE, `could not listen on port ${this.o.port}`);
    return listening;
  }

  private addUpstream(sock: net.Socket): void {
    const u: Upstream = { sock, local: null };
    this.unreadUpstreams.add(u);
    sock.once('close', () => {
      this.unreadUpstreams.delete(u);
      if (u.local !== null && this.upstreamsByLocal.get(u.local) === u) this.upstreamsByLocal.delete(u.local);
    });
  }

  /**
   * The upstream socket of this proxy whose local endpoint is `source`, if
   * any: then the accepted connection is that socket's, steered back to us
   * (its mark is not the one the tc program skips). connect() binds the
   * socket before its SYN leaves and the accept comes after the SYN, so the
   * endpoint can be read here; each socket's only once, from node's handle
   * (no descriptor call through koffi: this runs for every connection).
   */
  private ownUpstream(source: string): net.Socket | null {
    for (const u of this.unreadUpstreams) {
      if (u.sock.destroyed) {
        this.unreadUpstreams.delete(u);
        continue;
      }
      const name = socketLocalName(u.sock);
      if (!name) continue;
      u.local = endpoint(name.address, name.port);
      this.unreadUpstreams.delete(u);
      this.upstreamsByLocal.set(u.local, u);
    }
    return this.upstreamsByLocal.get(source)?.sock ?? null;
  }

  private track(sock: net.Socket): void {
    this.open.add(sock);
    sock.once('close', () => this.open.delete(sock));
  }

  private report(event: ConnectionEvent): void {
    // winston formats a line before any transport weighs its level: an
    // allowed connection's line costs nothing unless it is shown.
    if (event.action === 'allow' && !log.isInfoEnabled()) return;
    const e = this.o.worker === undefined ? event : { ...event, worker: this.o.worker };
    const line = `${e.action} ${e.source} -> ${e.destination} (${e.reason}${e.sni ? `, sni ${e.sni}` : ''}${e.host ? `, host ${e.host}` : ''}${e.mode ? `, ${e.mode}` : ''})`;
    if (e.action === 'allow') log.info(line, e);
    else log.warn(line, e);
  }

  private async handle(client: net.Socket): Promise<void> {
    const admission = this.limit.admit(client, this.stats.active);
    if (!admission.ok) {
      this.stats.refused++;
      if (admission.why === 'source') this.stats.refusedPerSource++;
      return;
    }
    this.stats.accepted++;
    this.stats.active++;
    this.track(client);
    client.on('error', () => {});
    const source = endpoint(client.remoteAddress, client.remotePort);
    const destHost = client.localAddress ?? '';
    const destPort = client.localPort ?? 0;
    const destination = endpoint(destHost, destPort);
    const idle = this.idle.watch(`${source} -> ${destination}`, client);
    // The upstream socket once connected: a failure after it closes it too.
    let connected: net.Socket | null = null;
    try {
      if (this.ownEndpoints.has(destination)) {
        // Not an intercepted connection: relaying it would loop into us.
        this.stats.denied++;
        this.report({ event: 'connection', source, destination, action: 'deny', reason: 'connection to the proxy port itself' });
        client.resetAndDestroy();
        return;
      }
      const looped = this.ownUpstream(source);
      if (looped) {
        // Refused here, the round ends: the upstream connect fails, and the
        // client that caused it is reset.
        this.stats.loops++;
        this.stats.denied++;
        this.report({
          event: 'connection',
          source,
          destination,
          action: 'deny',
          reason: `loop: the proxy's own upstream connection was steered back to it (--mark 0x${(this.o.mark >>> 0).toString(16)} is not the attachment's --proxy-mark)`,
        });
        client.resetAndDestroy();
        looped.destroy(Object.assign(new Error(`connect ${destination}: steered back to this proxy`), { code: 'ELOOP' }));
        return;
      }
      let first: Buffer = Buffer.alloc(0);
      let facts: NameFacts = {};
      if (this.o.policy.needsPayload) {
        const r = await readFirstBytes(client, this.o.sniffTimeoutMs);
        first = r.bytes;
        facts = factsOf(r.sniffed);
      }
      const decision: Decision = (await decideWithBinding(this.o.policy, { destination: destHost, port: destPort, ...facts }, this.bindName)).decision;
      if (decision.action === 'deny') {
        this.stats.denied++;
        this.report({ event: 'connection', source, destination, action: 'deny', reason: decision.reason, sni: facts.sni, host: facts.host });
        client.resetAndDestroy();
        return;
      }
      let upstream: net.Socket;
      try {
        upstream = await connectUpstream({
          host: destHost,
          port: destPort,
          mark: this.o.mark,
          timeoutMs: this.o.connectTimeoutMs,
          kernelOwned: this.o.kernelOwnsSockets ?? false,
          onSocket: (sock, fd) => {
            this.addUpstream(sock);
            if (fd !== null) this.o.ownSocket?.(fd);
          },
        });
      } catch (err) {
        this.stats.failed++;
        this.report({ event: 'connection', source, destination, action: 'error', reason: `upstream: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` });
        client.resetAndDestroy();
        return;
      }
      connected = upstream;
      this.track(upstream);
      idle.add(upstream);
      if (client.destroyed) {
        upstream.destroy();
        return;
      }
      const splicer = this.o.splicer ?? null;
      let plan: ShortcutPlan | null = null;
      const mode = chooseDataPath(decision, facts, {
        canSplice: splicer !== null,
        // Either hop: an upstream socket on the fast path (a local server of
        // the cgroup) sends by sk_msg, past its TCP send stream, where the
        // splicer counts what it owes before it forwards a half-close: that
        // count would never complete, and the close never be forwarded.
        onFastPath: () => (this.o.onFastPath?.(client) ?? false) || (this.o.onFastPath?.(upstream) ?? false),
        canShortcut: () => {
          plan = this.shortcutFor(client, upstream);
          return plan !== null;
        },
      });
      this.stats.allowed++;
      const kind = mode === 'shortcut' ? (plan as ShortcutPlan | null)?.kind : undefined;
      this.report({
        event: 'connection',
        source,
        destination,
        action: 'allow',
        reason: decision.reason,
        sni: facts.sni,
        host: facts.host,
        mode,
        ...(kind ? { shortcut: kind } : {}),
      });
      if (mode === 'shortcut' && plan) {
        this.stats.shortcut++;
        const taken: ShortcutPlan = plan;
        // The shortcut's bytes pass the proxy's sockets (local), or show
        // one way only (egress: on the upstream socket's tcp_info): the
        // kernel counts them in the entries, which count as its sockets do.
        idle.count(() => taken.sent());
        // Closed as idle: a FIN, as any connection, on each side whose
        // stream the proxy holds no byte of; a reset where it still does
        // (what written() waits for, see install()).
        idle.beforeClose(() => {
          if (!client.destroyed && client.writableLength === 0) taken.written(0);
          if (!upstream.destroyed && upstream.writableLength === 0) taken.written(1);
        });
        // Relayed as any connection: what reaches the proxy's sockets
        // (bytes sent before the shortcut was taken, or while it is left).
        client.once('finish', () => taken.written(0));
        upstream.once('finish', () => taken.written(1));
        if (first.length) upstream.write(first);
        const r = await relay(client, upstream).finally(() => taken.end());
        if (log.isDebugEnabled())
          log.debug(`closed ${source} -> ${destination}: ${r.up} B up, ${r.down} B down through the proxy, the rest by the shortcut${r.reset ? ', reset' : ''}`);
      } else if (mode === 'splice' && splicer) {
        this.stats.spliced++;
        const r = await splicer.splice(client, upstream, first);
        if (log.isDebugEnabled()) log.debug(`closed ${source} -> ${destination}: ${r.aToB} B up, ${r.bToA} B down, spliced${r.reset ? ', reset' : ''}`);
      } else if (mode === 'inspect') {
        this.stats.inspected++;
        const verdict = ({ decision: d }: { decision: Decision }): RequestVerdict => (d.action === 'allow' ? { ok: true } : { ok: false, reason: d.reason });
        const r = await relayInspected(client, upstream, first, (head) => {
          const decided = decideWithBinding(this.o.policy, { destination: destHost, port: destPort, protocol: 'http', host: head.name }, this.bindName);
          return decided instanceof Promise ? decided.then(verdict) : verdict(decided);
        });
        if (r.refused) {
          const { reason, request, host, framing } = r.refused;
          if (framing) this.stats.framingRefused++;
          else this.stats.requestsDenied++;
          this.report({ event: 'connection', source, destination, action: 'deny', reason: `${framing ? 'refused framing: ' : ''}${reason}, request ${request}`, host, mode });
        }
        if (log.isDebugEnabled()) log.debug(`closed ${source} -> ${destination}: ${r.up} B up, ${r.down} B down, ${r.requests} requests${r.reset ? ', reset' : ''}`);
      } else {
        this.stats.relayed++;
        if (first.length) upstream.write(first);
        const r = await relay(client, upstream);
        if (log.isDebugEnabled()) log.debug(`closed ${source} -> ${destination}: ${r.up} B up, ${r.down} B down${r.reset ? ', reset' : ''}`);
      }
    } catch (err) {
      this.stats.failed++;
      log.error(`${source} -> ${destination}: ${(err as Error).message}`);
      client.destroy();
      connected?.resetAndDestroy();
    } finally {
      this.stats.active--;
    }
  }

  /** A shortcut for this pair, installed, or null (the sockets are not all
   * on one fast path, or its map refused the entries: the pair is relayed). */
  private shortcutFor(client: net.Socket, upstream: net.Socket): ShortcutPlan | null {
    let plan: ShortcutPlan | null;
    try {
      plan = this.o.shortcuts?.plan(client, upstream) ?? null;
    } catch (err) {
      log.debug(`no shortcut: ${(err as Error).message}`);
      return null;
    }
    if (!plan) return null;
    try {
      plan.install();
      return plan;
    } catch (err) {
      plan.abandon();
      log.debug(`no shortcut: ${(err as Error).message}`);
      return null;
    }
  }

  /** Stop accepting; let open connections finish for up to graceMs, then
   * end them. */
  async stop(graceMs: number): Promise<void> {
    const servers = this.servers;
    this.servers = [];
    await closeGracefully(servers, this.open, graceMs);
    this.idle.stop();
    this.o.shortcuts?.close();
  }
}
