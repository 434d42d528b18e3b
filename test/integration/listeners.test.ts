// The sockops program counts the listening sockets of each address and port
// (an SO_REUSEPORT group is one key, several sockets). Many listeners of one
// group start at the same instant and close at the same instant, round after
// round (test/fixtures/reuseport-listeners.py, released by barriers): the
// count is exactly the number of sockets after each start, and the record is
// gone after each close.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { spawn } from '../../src/proc/run.js';
import { attachOk, maps, stopProcess, testCgroup, waitFor } from '../helpers/env.js';
import { FIXTURES } from '../helpers/intercept.js';

const PORT = 18097;
const SOCKETS = 24;
const ROUNDS = 30;

describe('listener count of an SO_REUSEPORT group', () => {
  it(`${SOCKETS} listeners starting and closing together, ${ROUNDS} times: the count is exact each time`, async (t) => {
    const cg = testCgroup(t);
    await attachOk(t, cg);
    const group = spawn('python3', [path.join(FIXTURES, 'reuseport-listeners.py'), String(PORT), String(SOCKETS)], { cgroupProcs: cg.procs });
    t.after(() => stopProcess(group));
    const step = async (cmd: 'listen' | 'close', answer: string, round: number) => {
      const before = group.lines().filter((l) => l === answer).length;
      group.write(`${cmd}\n`);
      const seen = await waitFor(() => group.lines().filter((l) => l === answer).length > before, 10_000);
      assert.ok(seen, `round ${round}: ${cmd} done (${(await Promise.race([group.done, Promise.resolve(null)]))?.stderr ?? 'running'})`);
    };
    const counts: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      await step('listen', 'listening', round);
      counts.push(maps(cg, (m) => m.listenersOn(PORT)));
      await step('close', 'closed', round);
      // A close is seen by sockops when the socket leaves LISTEN, before close() returns.
      assert.equal(
        maps(cg, (m) => m.listenersOn(PORT)),
        0,
        `round ${round}: no listener left recorded`,
      );
    }
    group.write('quit\n');
    assert.deepEqual(
      counts,
      counts.map(() => SOCKETS),
      'every socket of every round counted',
    );
  });
});
