// The journal: one operation at a time per attachment (a flock on the
// cgroup's directory), and what an operation killed half way was doing.
// Rootless: the state directory and the "cgroup" are temporary ones
// (flock works the same on any directory).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';

const base = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-journal-'));
const dir = path.join(base, 'state');
const cgroup = path.join(base, 'cgroup');
fs.mkdirSync(cgroup);
process.env.ACCEL_STATE_DIR = dir;
after(() => fs.rmSync(base, { recursive: true, force: true }));
const { JournalHandle, interruptedJournal } = await import('../../src/attachment/journal.js');
const { journalPath } = await import('../../src/paths.js');

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync('sh', ['-c', 'echo $$']);
  return Number(String(r.stdout).trim());
}

describe('journal', () => {
  it('is written before each step and gone when the operation ends', () => {
    const j = JournalHandle.open(1n, cgroup, 'attach');
    assert.equal(j.interrupted, null);
    j.begin(['install-fastpath', 'adopt-listeners'], 1);
    const seen = JSON.parse(fs.readFileSync(journalPath(1n), 'utf8')) as { pid: number; current: number; steps: string[] };
    assert.deepEqual([seen.pid, seen.current, seen.steps], [process.pid, 1, ['install-fastpath', 'adopt-listeners']]);
    j.close();
    assert.equal(fs.existsSync(journalPath(1n)), false);
    assert.deepEqual(fs.readdirSync(dir), [], 'nothing left in the state directory');
  });

  it('refuses a second operation while the first holds the cgroup (E_BUSY), in this process or another', async () => {
    const first = JournalHandle.open(2n, cgroup, 'attach');
    assert.throws(
      () => JournalHandle.open(2n, cgroup, 'detach'),
      (e: Error & { code?: string }) => e.code === 'E_BUSY' && e.message.includes(`pid ${process.pid}`),
    );
    first.close();
    // Another process holds it (flock(1), which execs sleep), then ends: the lock goes with it.
    const holder = spawn('flock', ['--nonblock', '--no-fork', cgroup, 'sleep', '30'], { stdio: 'ignore' });
    try {
      let busy = false;
      // Until flock(1) has started and taken the lock (a while on a busy
      // machine): 10 s at most.
      for (let i = 0; i < 500 && !busy; i++) {
        await new Promise((r) => setTimeout(r, 20));
        try {
          JournalHandle.open(3n, cgroup, 'attach').close();
        } catch (e) {
          busy = (e as { code?: string }).code === 'E_BUSY';
        }
      }
      assert.ok(busy, 'refused while another process holds the lock');
    } finally {
      // (It may have ended already: then its 'exit' came and went.)
      if (holder.exitCode === null && holder.signalCode === null) {
        holder.kill('SIGKILL');
        await new Promise((r) => holder.once('exit', r));
      }
    }
    JournalHandle.open(3n, cgroup, 'attach').close();
  });

  it('takes over the journal of a process that died, and says what it was doing', () => {
    const pid = deadPid();
    fs.writeFileSync(
      journalPath(4n),
      JSON.stringify({ version: 1, pid, operation: 'attach', spec: null, startedAt: '', steps: ['install-fastpath', 'install-intercept'], current: 1 }),
    );
    assert.equal(interruptedJournal(4n)?.pid, pid);
    const j = JournalHandle.open(4n, cgroup, 'detach');
    assert.equal(j.interrupted?.pid, pid);
    assert.equal(j.interrupted?.steps[j.interrupted.current], 'install-intercept');
    j.close();
    assert.equal(fs.existsSync(journalPath(4n)), false);
  });

  it('a journal torn by a crash during its first write belongs to nobody', () => {
    fs.writeFileSync(journalPath(5n), '{"version":1,"pid":');
    const j = JournalHandle.open(5n, cgroup, 'attach');
    assert.notEqual(j.interrupted, null);
    j.close();
  });
});
