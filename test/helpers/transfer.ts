// One connection of the fast path transferring both ways for about 5 s,
// paced, while a test restarts or upgrades what runs it; then every byte
// checked. Shared by the upgrade and agent tests.
import assert from 'node:assert/strict';
import type { Cgroup } from '../../src/cgroup/cgroup.js';
import { type HeldProbe, startHeldProbe } from '../../src/probe/sockprobe.js';
import { MB, maps, waitFor } from './env.js';

export const TRANSFER = 160 * MB;

/** About 5 s of paced traffic both ways on one connection of the fast path,
 * running once this returns, and until byteExact: the client keeps its
 * last 64 KiB until then (--hold-end), so the connection spans a test's
 * steps however long they take on a busy machine, and its last bytes cross
 * after them. (It used to end on its own, and tests asserted it had not
 * yet: that failed on a slow machine.) */
export async function transfer(t: { after: (fn: () => void) => void }, cg: Cgroup & { procs: string }): Promise<{ probe: HeldProbe }> {
  const paced = ['--sizes', '65536', '--pace-us', '2000', '--hold-end', '--stall-ms', '60000'];
  const probe = await startHeldProbe(['pair', '--duplex', '--reader', 'epoll', '--bytes', String(TRANSFER), '--back', String(TRANSFER), ...paced], {
    cgroupProcs: cg.procs,
  });
  t.after(() => probe.kill());
  probe.release();
  assert.ok(await waitFor(() => maps(cg, (m) => m.counters().bytes_redirected) > BigInt(8 * MB), 10_000), 'the transfer is on the fast path');
  return { probe };
}

/** Let it finish (its held last bytes); then it ended whole: every byte
 * both ways, none reset. */
export async function byteExact(probe: HeldProbe): Promise<void> {
  probe.release();
  const r = await probe.result;
  assert.ok(r.ok, r.error ?? '');
  assert.deepEqual(
    r.sides.map((s) => s.received),
    [TRANSFER, TRANSFER],
    'every byte arrived (sockprobe checks each against the stream)',
  );
  assert.ok(
    r.sides.every((s) => !s.reset),
    'none reset',
  );
}
