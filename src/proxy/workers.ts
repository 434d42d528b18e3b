/**
 * accel proxy --workers N: N processes serve one proxy port, each accepting
 * on its own socket of one SO_REUSEPORT group; the kernel spreads the
 * port's new connections over the group by their 4-tuple.
 *
 * The supervisor (the command's own process) makes every listening socket
 * and keeps a copy of each; a worker gets its own (one per family) as an
 * inherited descriptor and serves it with the same TransparentProxy as a
 * single process. Interception hands a SYN to the one socket registered
 * for the port (tc_tproxy.c, sk_lookup.c); since Linux 6.5 a listener of a
 * SO_REUSEPORT group given to bpf_sk_assign (or by sk_lookup) stands for
 * its group, and the kernel chooses in the group as for any SYN. The
 * supervisor registers one socket per family, and because it holds a copy,
 * the registration outlives the worker that accepts on it. A worker that
 * dies: the registration moves to a live worker's socket, the dead one's
 * socket is closed (what waited in its accept queue is reset), and a new
 * worker with a new socket takes its place. The others' connections never
 * notice.
 *
 * Upstream sockets: the supervisor holds the cgroup/sock_create program
 * (own-sockets.ts) and admits each worker's pid to it before the worker
 * may accept; where that program is unavailable each worker records its
 * own sockets one by one, as a single process does.
 *
 * Any process of the same user (root) can join a SO_REUSEPORT group by
 * binding the port with SO_REUSEPORT: such a process could already replace
 * the proxy, so nothing is given away that was not.
 */
import { type ChildProcess, fork } from 'node:child_process';
import os from 'node:os';
import { z } from 'zod';
import { AccelError, ErrorCodes } from '../errors.js';
import { log } from '../log.js';
import { type Family, closeSocket, transparentListener } from '../sys/socket.js';
import type { KernelOwnSockets } from './own-sockets.js';
import { type ProxyStats, zeroStats } from './server.js';

/** Set in a worker's environment: which worker it is and its sockets. */
export const WORKER_ENV = 'ACCEL_PROXY_WORKER';
/** A worker's first inherited descriptor (0-2 stdio, 3 the channel). */
const FIRST_FD = 4;
/** How often a worker sends its counters. */
export const STATS_PERIOD_MS = 1000;
/** A worker that dies sooner than this after its start waits this long
 * before its replacement starts (no crash loop at full speed). */
const RESTART_BACKOFF_MS = 1000;
/** Workers at most: the sock_create program's map of processes holds 64. */
export const MAX_WORKERS = 32;

export interface WorkerListener {
  fd: number;
  family: Family;
}

export interface WorkerContext {
  index: number;
  listeners: WorkerListener[];
}

const WorkerContextSchema = z.object({
  index: z.number().int().min(0),
  listeners: z.array(z.object({ fd: z.number().int().min(0), family: z.union([z.literal(4), z.literal(6)]) })).min(1),
});

/** This process's worker context, or null when it is no worker. */
export function workerContext(): WorkerContext | null {
  const raw = process.env[WORKER_ENV];
  if (raw === undefined) return null;
  const r = WorkerContextSchema.safeParse(JSON.parse(raw));
  if (!r.success) throw new AccelError(ErrorCodes.INTERNAL, `${WORKER_ENV}: ${r.error.message}`);
  return r.data;
}

/** start carries the policy the supervisor loaded (its JSON value and
 * where it came from): every worker, a replacement too, enforces that one,
 * whatever the file says by then. */
export type ToWorker = { type: 'start'; kernelOwnsSockets: boolean; policy: { value: unknown; source: string } } | { type: 'stop' };

const StatsSchema = z.record(z.string(), z.number());
const FromWorkerSchema = z.discriminatedUnion('type', [z.object({ type: z.literal('ready') }), z.object({ type: z.literal('stats'), stats: StatsSchema })]);
export type FromWorker = z.infer<typeof FromWorkerSchema>;

export interface WorkersOptions {
  workers: number;
  port: number;
  families: Family[];
  backlog: number;
  /** The CLI entry and the worker's arguments (the proxy's own). */
  entry: string;
  args: string[];
  /** Makes `fd` the socket interception hands the port's connections to. */
  register(fd: number, family: Family): void;
  kernelOwned: KernelOwnSockets | null;
  /** The policy every worker enforces (ToWorker's start). */
  policy: { value: unknown; source: string };
}

interface Slot {
  index: number;
  listeners: WorkerListener[];
  child: ChildProcess | null;
  stats: ProxyStats | null;
  startedAt: number;
  exited: Promise<void>;
}

const ZERO: ProxyStats = zeroStats();

function add(into: ProxyStats, s: ProxyStats, withActive: boolean): void {
  for (const k of Object.keys(ZERO) as (keyof ProxyStats)[]) if (k !== 'active' || withActive) into[k] += s[k] ?? 0;
}

/** Does this kernel release let bpf_sk_assign (and sk_lookup) take a
 * socket of a SO_REUSEPORT group, choosing within it? Linux 6.5 and later
 * (before, it is refused with ESOCKTNOSUPPORT). */
export function reuseportGroupsAssignable(release: string): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return false;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 6 || (major === 6 && minor >= 5);
}

export class ProxyWorkers {
  private readonly slots: Slot[] = [];
  /** Per family, the slot whose socket is registered. */
  private readonly registered = new Map<Family, number>();
  /** Counters of workers that are gone (their connections are too). */
  private readonly retired: ProxyStats = { ...ZERO };
  private stopping = false;
  private families: Family[] = [];
  /** Workers started again after one died. */
  restarts = 0;

  constructor(private readonly o: WorkersOptions) {}

  /** Make the sockets, register, start every worker and wait until each
   * serves; the endpoints listened on. On failure nothing stays. */
  async start(): Promise<string[]> {
    if (!reuseportGroupsAssignable(os.release())) {
      throw new AccelError(
        ErrorCodes.KERNEL_FEATURE,
        `--workers ${this.o.workers} needs Linux 6.5 or later, where bpf_sk_assign takes a socket of a SO_REUSEPORT group (before, it refuses one, and every intercepted connection would fail); this kernel is ${os.release()}: run one worker`,
      );
    }
    try {
      this.families = this.firstSockets();
      for (let i = 1; i < this.o.workers; i++) this.slots.push(this.newSlot(i));
      for (const f of this.families) {
        const first = this.slots[0]?.listeners.find((l) => l.family === f) as WorkerListener;
        this.o.register(first.fd, f);
        this.registered.set(f, 0);
      }
      await Promise.all(this.slots.map((s) => this.spawn(s)));
    } catch (err) {
      await this.stop(0);
      throw err;
    }
    return this.families.map((f) => (f === 4 ? `127.0.0.1:${this.o.port}` : `[::1]:${this.o.port}`));
  }

  /** Slot 0's sockets decide the families, as a single proxy does: a port
   * in use fails, a family this host lacks is left out. */
  private firstSockets(): Family[] {
    const listeners: WorkerListener[] = [];
    for (const family of this.o.families) {
      const address = family === 4 ? '127.0.0.1' : '::1';
      try {
        // Anything already on the port (another accel proxy, any service,
        // a SO_REUSEPORT group of its own) makes this plain bind fail: a
        // group socket alone would join such a group and take a share of
        // connections accel does not own.
        closeSocket(transparentListener(family, address, this.o.port, this.o.backlog));
        listeners.push({ fd: transparentListener(family, address, this.o.port, this.o.backlog, true), family });
      } catch (err) {
        if (err instanceof AccelError && err.code === ErrorCodes.ADDRESS_IN_USE) {
          for (const l of listeners) closeSocket(l.fd);
          throw new AccelError(ErrorCodes.ADDRESS_IN_USE, `port ${this.o.port} on ${address} is already in use`);
        }
        log.warn(`no IPv${family} listener: ${(err as Error).message}`);
      }
    }
    if (!listeners.length) throw new AccelError(ErrorCodes.ADDRESS_IN_USE, `could not listen on port ${this.o.port}`);
    this.slots.push({ index: 0, listeners, child: null, stats: null, startedAt: 0, exited: Promise.resolve() });
    return listeners.map((l) => l.family);
  }

  private newSlot(index: number): Slot {
    const listeners: WorkerListener[] = [];
    try {
      for (const family of this.families) {
        listeners.push({ fd: transparentListener(family, family === 4 ? '127.0.0.1' : '::1', this.o.port, this.o.backlog, true), family });
      }
    } catch (err) {
      for (const l of listeners) closeSocket(l.fd);
      throw err;
    }
    return { index, listeners, child: null, stats: null, startedAt: 0, exited: Promise.resolve() };
  }

  /** Start the slot's worker; resolves once it serves. */
  private spawn(slot: Slot): Promise<void> {
    const context: WorkerContext = { index: slot.index, listeners: slot.listeners.map((l, k) => ({ fd: FIRST_FD + k, family: l.family })) };
    const child = fork(this.o.entry, this.o.args, {
      env: { ...process.env, [WORKER_ENV]: JSON.stringify(context) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc', ...slot.listeners.map((l) => l.fd)],
    });
    slot.child = child;
    slot.stats = null;
    slot.startedAt = Date.now();
    // 'close': the process is gone and its channel read to the end (its
    // last counters in).
    slot.exited = new Promise((resolve) => child.once('close', () => resolve()));
    const pid = child.pid;
    return new Promise<void>((resolve, reject) => {
      let ready = false;
      child.on('message', (raw) => {
        const m = FromWorkerSchema.safeParse(raw);
        if (!m.success) return log.warn(`proxy worker ${slot.index}: unexpected message`);
        if (m.data.type === 'ready') {
          ready = true;
          resolve();
        } else if (slot.child === child) slot.stats = { ...ZERO, ...m.data.stats };
      });
      child.once('close', (code, signal) => {
        if (pid !== undefined) this.o.kernelOwned?.forget(pid);
        if (!ready) reject(new AccelError(ErrorCodes.EXEC, `proxy worker ${slot.index} exited before serving (${signal ?? `exit ${code}`})`));
        this.exited(slot, child, signal ?? `exit ${code}`);
      });
      // 'on': a send to a worker that is dying fails again (EPIPE); an
      // unhandled second error would end the supervisor.
      child.on('error', (err) => reject(new AccelError(ErrorCodes.EXEC, `proxy worker ${slot.index}: ${err.message}`)));
      // Recognised by the kernel as the proxy's before it may connect
      // anywhere: only then is it told to start.
      try {
        if (pid !== undefined) this.o.kernelOwned?.admit(pid);
      } catch (err) {
        child.kill('SIGKILL');
        reject(err as Error);
        return;
      }
      child.send({ type: 'start', kernelOwnsSockets: this.o.kernelOwned !== null, policy: this.o.policy } satisfies ToWorker);
    });
  }

  private exited(slot: Slot, child: ChildProcess, how: string): void {
    if (slot.child !== child) return;
    slot.child = null;
    if (slot.stats) add(this.retired, slot.stats, false);
    slot.stats = null;
    if (this.stopping) return;
    log.warn(`proxy worker ${slot.index} (pid ${child.pid}) ended: ${how}; starting another`);
    this.replace(slot).catch((err: unknown) => log.error(`proxy worker ${slot.index}: not started again: ${(err as Error).message}`));
  }

  /** The dead worker's sockets leave the group (after the registration
   * moved off them), a new worker with new sockets takes the slot. */
  private async replace(slot: Slot): Promise<void> {
    const old = slot.listeners;
    // The dead worker's sockets leave the group whatever happens next: a
    // socket nobody accepts from would keep its share of new connections
    // waiting for good.
    let fresh: WorkerListener[] | null = null;
    let failure: unknown = null;
    try {
      fresh = this.newSlot(slot.index).listeners;
    } catch (err) {
      failure = err;
    }
    try {
      for (const l of old) {
        if (this.registered.get(l.family) !== slot.index) continue;
        const live = this.slots.find((s) => s !== slot && s.child !== null);
        const to = live ? live.listeners.find((x) => x.family === l.family) : fresh?.find((x) => x.family === l.family);
        // No socket to move to: closing this one takes it out of the map,
        // and interception refuses the port's connections until a worker is back.
        if (!to) continue;
        this.o.register(to.fd, l.family);
        this.registered.set(l.family, live ? live.index : slot.index);
      }
    } finally {
      for (const l of old) closeSocket(l.fd);
      slot.listeners = fresh ?? [];
    }
    if (!fresh) throw failure;
    const lived = Date.now() - slot.startedAt;
    if (lived < RESTART_BACKOFF_MS) await new Promise((r) => setTimeout(r, RESTART_BACKOFF_MS));
    if (this.stopping) return;
    this.restarts++;
    await this.spawn(slot);
  }

  /** Pids of the running workers. */
  pids(): number[] {
    return this.slots.flatMap((s) => (s.child?.pid !== undefined ? [s.child.pid] : []));
  }

  /** Every worker's counters added up (from their last report), with
   * those of workers that are gone. */
  stats(): ProxyStats {
    const sum = { ...this.retired };
    for (const s of this.slots) if (s.stats) add(sum, s.stats, true);
    return sum;
  }

  /** Every worker stops accepting and gets graceMs for its connections
   * (as a single proxy does); a worker still there after that and a
   * margin is killed. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    for (const s of this.slots) {
      const child = s.child;
      if (!child) continue;
      if (child.connected) child.send({ type: 'stop' } satisfies ToWorker);
      else child.kill('SIGTERM');
    }
    // The workers' copies are all that keep the sockets open now.
    for (const s of this.slots) for (const l of s.listeners) closeSocket(l.fd);
    const kill = setTimeout(() => {
      for (const s of this.slots) s.child?.kill('SIGKILL');
    }, graceMs + 5000);
    await Promise.all(this.slots.map((s) => (s.child ? s.exited : Promise.resolve())));
    clearTimeout(kill);
    this.slots.length = 0;
  }
}
