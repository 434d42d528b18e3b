/**
 * Holding back spliced sockets whose destination does not keep up.
 *
 * The verdict program cannot make TCP wait: whatever it redirects to a
 * destination whose peer stopped reading waits in the destination's psock,
 * bounded by nothing, while the source's TCP window stays open (the kernel
 * took the bytes off its receive queue). SO_RCVLOWAT does not stop it for
 * long either: TCP calls the data-ready callback anyway once the receive
 * buffer is nearly full (tcp_epollin_ready). So when the verdict finds the
 * destination's send buffer full with bytes waiting behind it, it puts the
 * source in accel_splice_held, and this poller takes the source out of the
 * verdict's map: with the socket locked, between two verdict runs
 * (bpf/iter_splice_hold.c; a socket taken out during a run loses the skbs
 * that run takes next). The source is then a plain TCP socket nobody reads: its
 * receive buffer fills and its window closes, as for any reader that stops.
 * Once the destination has sent what was redirected to it and three
 * quarters of its send buffer are free, the source goes back into the map
 * and the verdict takes its queue, in order.
 *
 * The poll runs while a pair is spliced, every POLL_MS while anything is
 * held and up to every POLL_IDLE_MS while nothing is: one system call when
 * nothing is held. What the kernel takes between the verdict's report and
 * the hold is what arrives in that time.
 *
 * Each tick does a bounded amount of work, whatever the number of spliced
 * sockets: at most `budget` reported sockets looked at for a hold (the
 * destination of each, which may have caught up since) and held (or their
 * stale reports cleared), and at most `budget` held sockets looked at for
 * release, taken round-robin (a socket looked at goes to the back of the
 * line), so that with thousands held a tick still stays short and no held
 * socket waits more than ceil(held / budget) ticks for its look. The new holds of a tick share one
 * walk over the TCP sockets of the namespace, which locks each in turn. The
 * walk goes over every bucket of the kernel's TCP hash tables, which are
 * the host's, sized by its memory, whatever the namespace holds: 1.7 ms on
 * this 24 GB machine (262,144 buckets) with two sockets in it. So after a
 * walk of d ms the next one waits WALK_GAP_FACTOR * d ms, at most
 * MAX_WALK_GAP_MS: walks of up to 16/3 ms take at most a quarter of the
 * owner's time however many destinations fall behind (longer ones take
 * more), and sockets reported meanwhile are held at the next walk if their
 * destination is still behind (the kernel takes what arrives for them until
 * then).
 */
import { sendBacklog } from '../sys/socket.js';
import { log } from '../log.js';
import type { SpliceMaps } from '../maps/splice.js';

/** The poll's period: POLL_MS while sockets are held or were lately, up to
 * POLL_IDLE_MS (doubling) while none is, since every wake-up of the owner
 * costs the round trips of the pairs it splices a little on a busy CPU. */
const POLL_MS = 2;
const POLL_IDLE_MS = 16;
/** Reported sockets looked at (and held), and held sockets looked at, per
 * tick (each a few system calls). */
export const HOLD_BUDGET_DEFAULT = 256;
/** After a walk of d ms, none for WALK_GAP_FACTOR * d ms, and never more
 * than MAX_WALK_GAP_MS: d is elapsed time, which a descheduled owner
 * stretches, and while a report waits the kernel keeps queueing for its
 * destination. */
export const WALK_GAP_FACTOR = 3;
export const MAX_WALK_GAP_MS = 16;

/** The first `n` of `queue`, moved to its back (a Set keeps insertion
 * order): round-robin over a set whose members come and go. */
export function takeRoundRobin<T>(queue: Set<T>, n: number): T[] {
  const taken: T[] = [];
  for (const item of queue) {
    if (taken.length >= n) break;
    taken.push(item);
  }
  for (const item of taken) {
    queue.delete(item);
    queue.add(item);
  }
  return taken;
}

/** Takes sockets out of the verdict's map, each between two verdict runs
 * (SpliceAttachment.takeOut); returns the cookies taken out. */
export type TakeOut = (cookies: readonly bigint[]) => Set<bigint>;

/** One spliced source socket, as the poller drives it. */
export interface HoldableSide {
  cookie: bigint;
  /** Get it ready to leave the verdict's map: node stops reading it. false
   * if it cannot be held. */
  prepareHold(): boolean;
  /** After the batch: out of the verdict's map (`taken`), or still in it,
   * and then read by node again. */
  settleHold(taken: boolean): void;
  /** Put it back; the verdict then takes what queued meanwhile. */
  release(): void;
  /** Bytes redirected to the destination that are not yet in its send
   * stream, and the destination's descriptor. */
  destination(): { inKernel: bigint; fd: number };
}

export class SpliceHolds {
  private readonly sides = new Map<bigint, HoldableSide>();
  private readonly holding = new Set<HoldableSide>();
  private timer: NodeJS.Timeout | null = null;
  private period = POLL_MS;

  private takeOutFailed = false;
  /** No walk before this time (clock()). */
  private nextWalkAt = 0;

  constructor(
    private readonly maps: SpliceMaps,
    private readonly takeOut: TakeOut,
    /** Work per tick, see above. */
    private readonly budget = HOLD_BUDGET_DEFAULT,
    /** Milliseconds, for the walks' spacing. */
    private readonly clock: () => number = () => performance.now(),
  ) {}

  add(side: HoldableSide): void {
    this.sides.set(side.cookie, side);
    if (!this.timer) this.schedule(POLL_MS);
  }

  private schedule(ms: number): void {
    this.period = ms;
    this.timer = setTimeout(() => {
      const busy = this.tick();
      if (this.sides.size) this.schedule(busy ? POLL_MS : Math.min(this.period * 2, POLL_IDLE_MS));
      else this.timer = null;
    }, ms).unref();
  }

  /** The side is finished with (its descriptor is about to close). */
  remove(side: HoldableSide): void {
    this.sides.delete(side.cookie);
    this.holding.delete(side);
    // Also an entry the verdict made since the last poll.
    this.maps.unhold(side.cookie);
    if (!this.sides.size && this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  isHeld(side: HoldableSide): boolean {
    return this.holding.has(side);
  }

  /** Release a held side now (its direction ends). */
  releaseNow(side: HoldableSide): void {
    if (!this.holding.delete(side)) return;
    this.maps.unhold(side.cookie);
    this.maps.add('releases');
    side.release();
  }

  /** One poll: hold what the verdict reported, release what drained, each
   * within the budget. Returns whether any socket is held (or was just
   * reported). */
  tick(): boolean {
    const reported = this.maps.heldCookies();
    const walkNow = this.clock() >= this.nextWalkAt;
    let work = 0;
    const ready: HoldableSide[] = [];
    for (const cookie of reported) {
      if (work >= this.budget) break; // the rest stay reported: next tick
      const side = this.sides.get(cookie);
      if (side && this.holding.has(side)) continue;
      if (side && !walkNow) continue; // stays reported: the next walk's
      work++;
      // A report may have waited for the walk: a destination that caught
      // up meanwhile needs no hold.
      if (side && !this.drained(side) && side.prepareHold()) ready.push(side);
      else this.maps.unhold(cookie);
    }
    if (ready.length) {
      const started = this.clock();
      const taken = this.takeOutSafely(ready.map((s) => s.cookie));
      const ended = this.clock();
      this.nextWalkAt = ended + Math.min((ended - started) * WALK_GAP_FACTOR, MAX_WALK_GAP_MS);
      for (const side of ready) {
        const out = taken.has(side.cookie);
        side.settleHold(out);
        if (out) this.holding.add(side);
        else this.maps.unhold(side.cookie); // reported again if still congested
      }
    }
    for (const side of takeRoundRobin(this.holding, this.budget)) {
      if (this.drained(side)) this.releaseNow(side);
    }
    return reported.length > 0 || this.holding.size > 0;
  }

  /** One walk for the batch; a failure holds nothing back this tick, and
   * is said once: until it works again nothing bounds what the kernel
   * queues for a destination that does not keep up. */
  private takeOutSafely(cookies: bigint[]): Set<bigint> {
    try {
      const taken = this.takeOut(cookies);
      this.takeOutFailed = false;
      return taken;
    } catch (err) {
      if (!this.takeOutFailed) log.warn(`cannot hold spliced sockets back (their destination does not keep up): ${(err as Error).message}`);
      this.takeOutFailed = true;
      return new Set();
    }
  }

  private drained(side: HoldableSide): boolean {
    try {
      const d = side.destination();
      if (d.inKernel > 0n) return false;
      const { queued, sndbuf } = sendBacklog(d.fd);
      return queued * 4 < sndbuf;
    } catch (err) {
      log.debug(`held socket's destination: ${(err as Error).message}`);
      return true; // gone: nothing to wait for
    }
  }
}
