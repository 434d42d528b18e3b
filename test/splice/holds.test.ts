/** The splice hold poll's scheduling: a bounded amount of work per tick,
 * round-robin, so that with many sockets held a tick stays short and none
 * waits forever. Driven with fake maps and sides (no BPF). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_WALK_GAP_MS, SpliceHolds, WALK_GAP_FACTOR, takeRoundRobin } from '../../src/splice/holds.js';
import type { HoldableSide } from '../../src/splice/holds.js';
import type { SpliceMaps } from '../../src/maps/splice.js';

/** The verdict's map of held cookies, as SpliceHolds uses it. */
class FakeMaps {
  readonly held = new Set<bigint>();
  unholds = 0;
  heldCookies(): bigint[] {
    return [...this.held];
  }
  unhold(cookie: bigint): void {
    this.unholds++;
    this.held.delete(cookie);
  }
  add(): void {}
}

/** A side whose destination drains when `drained` is set; counts the work
 * done on it. fd -1: the send-queue look fails, which reads as drained, so
 * a drained side needs no real socket. */
function side(cookie: bigint) {
  const s = {
    cookie,
    drained: false,
    holds: 0,
    looks: 0,
    released: 0,
    settled: [] as boolean[],
    prepareHold: () => (s.holds++, true),
    settleHold: (taken: boolean) => void s.settled.push(taken),
    release: () => void s.released++,
    destination: () => (s.looks++, { inKernel: s.drained ? 0n : 1n, fd: -1 }),
  };
  return s satisfies HoldableSide;
}

/** Takes every cookie out, or only those in `only`; counts the walks. */
function takeOut(only?: Set<bigint>) {
  const f = Object.assign(
    (cookies: readonly bigint[]) => {
      f.walks++;
      f.asked.push(cookies.length);
      return new Set(cookies.filter((c) => !only || only.has(c)));
    },
    { walks: 0, asked: [] as number[] },
  );
  return f;
}

/** A clock that stands still: walks take no time, so none waits for the
 * last (the spacing has its own test). */
const still = () => 0;

describe('splice hold poll', () => {
  it('takeRoundRobin takes the first n and moves them to the back', () => {
    const q = new Set([1, 2, 3, 4, 5]);
    assert.deepEqual(takeRoundRobin(q, 2), [1, 2]);
    assert.deepEqual([...q], [3, 4, 5, 1, 2]);
    assert.deepEqual(takeRoundRobin(q, 10), [3, 4, 5, 1, 2]);
    assert.deepEqual(takeRoundRobin(new Set<number>(), 3), []);
  });

  it('holds at most `budget` reported sockets and looks at most `budget` held ones per tick, and reaches every one within ceil(n / budget) ticks', () => {
    const maps = new FakeMaps();
    const BUDGET = 4;
    const N = 10;
    const holds = new SpliceHolds(maps as unknown as SpliceMaps, takeOut(), BUDGET, still);
    const sides = Array.from({ length: N }, (_, i) => side(BigInt(i + 1)));
    for (const s of sides) {
      holds.add(s);
      maps.held.add(s.cookie);
    }
    const ticks = Math.ceil(N / BUDGET);
    for (let t = 1; t <= ticks; t++) {
      const before = sides.map((s) => [s.holds, s.looks]);
      holds.tick();
      const held = sides.reduce((n, s, i) => n + s.holds - (before[i]?.[0] ?? 0), 0);
      const looked = sides.reduce((n, s, i) => n + s.looks - (before[i]?.[1] ?? 0), 0);
      assert.ok(held <= BUDGET, `tick ${t}: ${held} holds`);
      // A look at each reported one before its hold (has its destination
      // caught up?), and one at each held one.
      assert.ok(looked <= 2 * BUDGET, `tick ${t}: ${looked} looks`);
    }
    assert.ok(
      sides.every((s) => s.holds === 1 && holds.isHeld(s)),
      'every reported socket is held once',
    );
    // Now each held one gets its look in turn: none starves.
    for (const s of sides) s.looks = 0;
    for (let t = 0; t < ticks; t++) holds.tick();
    assert.ok(
      sides.every((s) => s.looks >= 1),
      `looks: ${sides.map((s) => s.looks).join(',')}`,
    );
    assert.ok(sides.every((s) => s.looks <= 1 + 1));
    for (const s of sides) holds.remove(s);
  });

  it('releases a drained socket within ceil(held / budget) ticks wherever it is in the line', () => {
    const BUDGET = 3;
    const N = 9;
    for (let which = 0; which < N; which++) {
      const maps = new FakeMaps();
      const holds = new SpliceHolds(maps as unknown as SpliceMaps, takeOut(), BUDGET, still);
      const sides = Array.from({ length: N }, (_, i) => side(BigInt(i + 1)));
      for (const s of sides) {
        holds.add(s);
        maps.held.add(s.cookie);
      }
      for (let t = 0; t < Math.ceil(N / BUDGET); t++) holds.tick();
      assert.ok(sides.every((s) => holds.isHeld(s)));
      const target = sides[which]!;
      target.drained = true;
      for (let t = 0; t < Math.ceil(N / BUDGET); t++) holds.tick();
      assert.equal(target.released, 1, `side ${which} released`);
      assert.equal(holds.isHeld(target), false);
      assert.equal(sides.filter((s) => s.released).length, 1, 'only the drained one');
      for (const s of sides) holds.remove(s);
    }
  });

  it('clears at most `budget` stale reports (cookies of no side) per tick', () => {
    const maps = new FakeMaps();
    const holds = new SpliceHolds(maps as unknown as SpliceMaps, takeOut(), 5, still);
    for (let i = 1; i <= 12; i++) maps.held.add(BigInt(1000 + i));
    holds.tick();
    assert.equal(maps.unholds, 5);
    holds.tick();
    holds.tick();
    assert.equal(maps.unholds, 12);
    assert.equal(maps.held.size, 0);
  });

  it('takes the new holds of a tick out in one walk; one the walk did not take out is not held, is read again and may be reported again', () => {
    const maps = new FakeMaps();
    const walk = takeOut(new Set([1n, 3n]));
    const holds = new SpliceHolds(maps as unknown as SpliceMaps, walk, 8, still);
    const sides = [1n, 2n, 3n].map(side);
    for (const s of sides) {
      holds.add(s);
      maps.held.add(s.cookie);
    }
    holds.tick();
    assert.equal(walk.walks, 1);
    assert.deepEqual(walk.asked, [3]);
    assert.deepEqual(
      sides.map((s) => [holds.isHeld(s), s.settled]),
      [
        [true, [true]],
        [false, [false]],
        [true, [true]],
      ],
    );
    assert.equal(maps.held.has(2n), false, 'its report is cleared');
    holds.tick();
    assert.equal(walk.walks, 1, 'no walk when nothing new is reported');
    for (const s of sides) holds.remove(s);
  });

  // A walk costs in proportion to the host's TCP hash tables (1.7 ms here),
  // not to what is held: with a destination falling behind at every tick,
  // back-to-back walks would take most of the owner's time.
  it('spaces its walks so that they take at most a quarter of the time, and holds every reported socket at a later walk', () => {
    const maps = new FakeMaps();
    let now = 0;
    const WALK_MS = 2;
    let walking = 0;
    const walk = (cookies: readonly bigint[]) => {
      now += WALK_MS;
      walking += WALK_MS;
      return new Set(cookies);
    };
    const holds = new SpliceHolds(maps as unknown as SpliceMaps, walk, 256, () => now);
    const sides = Array.from({ length: 200 }, (_, i) => side(BigInt(i + 1)));
    // A new socket reported before each tick, ticks 2 ms apart.
    for (const s of sides) {
      holds.add(s);
      maps.held.add(s.cookie);
      holds.tick();
      now += 2;
    }
    const share = walking / now;
    assert.ok(share <= 1 / (1 + WALK_GAP_FACTOR) + 0.01, `walks took ${(share * 100).toFixed(0)}% of the time`);
    assert.ok(
      sides.some((s) => !holds.isHeld(s) && s.holds === 0),
      'some waited for a later walk, still reported',
    );
    for (let t = 0; t < 1 + WALK_GAP_FACTOR; t++) {
      holds.tick();
      now += WALK_MS;
    }
    assert.ok(
      sides.every((s) => holds.isHeld(s) && s.holds === 1),
      'each reported socket is held, once',
    );
    for (const s of sides) holds.remove(s);
  });

  it('waits at most MAX_WALK_GAP_MS after a walk however long it took (a descheduled owner), and does not hold a socket whose destination caught up meanwhile', () => {
    const maps = new FakeMaps();
    let now = 0;
    const walk = Object.assign(
      (cookies: readonly bigint[]) => {
        walk.walks++;
        now += 100; // the owner was descheduled during the walk
        return new Set(cookies);
      },
      { walks: 0 },
    );
    const holds = new SpliceHolds(maps as unknown as SpliceMaps, walk, 8, () => now);
    const [a, b, c] = [1n, 2n, 3n].map(side);
    for (const s of [a, b, c]) holds.add(s!);
    maps.held.add(1n);
    holds.tick();
    assert.equal(walk.walks, 1);
    maps.held.add(2n);
    maps.held.add(3n);
    c!.drained = true; // its destination caught up before the next walk
    now += MAX_WALK_GAP_MS - 1;
    holds.tick();
    assert.equal(walk.walks, 1, 'not yet');
    assert.ok(maps.held.has(2n) && maps.held.has(3n), 'both wait, reported');
    now += 1;
    holds.tick();
    assert.equal(walk.walks, 2, `a walk ${MAX_WALK_GAP_MS} ms after the last, not 3 x 100 ms`);
    assert.equal(holds.isHeld(b!), true);
    assert.equal(holds.isHeld(c!), false);
    assert.equal(c!.holds, 0, 'never prepared');
    assert.equal(maps.held.has(3n), false, 'its report cleared');
    for (const s of [a, b, c]) holds.remove(s!);
  });

  it('a walk that fails holds nothing back and settles every side as not taken out', () => {
    const maps = new FakeMaps();
    const holds = new SpliceHolds(
      maps as unknown as SpliceMaps,
      () => {
        throw new Error('no iterator');
      },
      8,
      still,
    );
    const s = side(7n);
    holds.add(s);
    maps.held.add(s.cookie);
    holds.tick();
    assert.equal(holds.isHeld(s), false);
    assert.deepEqual(s.settled, [false]);
    holds.remove(s);
  });
});
