/** The splice hold poll's scheduling: a bounded amount of work per tick,
 * round-robin, so that with many sockets held a tick stays short and none
 * waits forever. Driven with fake maps and sides (no BPF). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SpliceHolds, takeRoundRobin } from '../../src/splice/holds.js';
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
    hold: () => (s.holds++, true),
    release: () => void s.released++,
    destination: () => (s.looks++, { inKernel: s.drained ? 0n : 1n, fd: -1 }),
  };
  return s satisfies HoldableSide;
}

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
    const holds = new SpliceHolds(maps as unknown as SpliceMaps, BUDGET);
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
      assert.ok(looked <= BUDGET, `tick ${t}: ${looked} looks`);
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
      const holds = new SpliceHolds(maps as unknown as SpliceMaps, BUDGET);
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
    const holds = new SpliceHolds(maps as unknown as SpliceMaps, 5);
    for (let i = 1; i <= 12; i++) maps.held.add(BigInt(1000 + i));
    holds.tick();
    assert.equal(maps.unholds, 5);
    holds.tick();
    holds.tick();
    assert.equal(maps.unholds, 12);
    assert.equal(maps.held.size, 0);
  });
});
