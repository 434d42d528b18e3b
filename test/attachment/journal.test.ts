// The journal: one operation at a time per attachment, and what an
// operation killed half way was doing. Rootless: its directory is a
// temporary one (ACCEL_STATE_DIR).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';

const dir = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'accel-journal-')), 'state');
process.env.ACCEL_STATE_DIR = dir;
after(() => fs.rmSync(path.dirname(dir), { recursive: true, force: true }));
const { JournalHandle, interruptedJournal } = await import('../../src/attachment/journal.js');
const { journalPath } = await import('../../src/paths.js');

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync('sh', ['-c', 'echo $$']);
  return Number(String(r.stdout).trim());
}

describe('journal', () => {
  it('is written before each step and gone when the operation ends', () => {
    const j = JournalHandle.open(1n, 'attach');
    assert.equal(j.interrupted, null);
    j.begin(['install-fastpath', 'adopt-listeners'], 1);
    const seen = JSON.parse(fs.readFileSync(journalPath(1n), 'utf8')) as { pid: number; current: number; steps: string[] };
    assert.deepEqual([seen.pid, seen.current, seen.steps], [process.pid, 1, ['install-fastpath', 'adopt-listeners']]);
    j.close();
    assert.equal(fs.existsSync(journalPath(1n)), false);
  });

  it('refuses a second operation while the first one lives (E_BUSY)', () => {
    // The parent of this test process is alive for as long as the test.
    fs.writeFileSync(journalPath(2n), JSON.stringify({ version: 1, pid: process.ppid, operation: 'detach', spec: null, startedAt: '', steps: [], current: -1 }));
    assert.throws(
      () => JournalHandle.open(2n, 'attach'),
      (e: Error & { code?: string }) => e.code === 'E_BUSY' && e.message.includes(`pid ${process.ppid}`),
    );
    assert.equal(interruptedJournal(2n), null, 'a live operation is not an interrupted one');
    fs.rmSync(journalPath(2n));
  });

  it('takes over the journal of a process that died, and says what it was doing', () => {
    const pid = deadPid();
    fs.writeFileSync(
      journalPath(3n),
      JSON.stringify({ version: 1, pid, operation: 'attach', spec: null, startedAt: '', steps: ['install-fastpath', 'install-intercept'], current: 1 }),
    );
    assert.equal(interruptedJournal(3n)?.pid, pid);
    const j = JournalHandle.open(3n, 'detach');
    assert.equal(j.interrupted?.pid, pid);
    assert.equal(j.interrupted?.steps[j.interrupted.current], 'install-intercept');
    j.close();
    assert.equal(fs.existsSync(journalPath(3n)), false);
  });

  it('a journal torn by a crash during its first write belongs to nobody', () => {
    fs.writeFileSync(journalPath(4n), '{"version":1,"pid":');
    const j = JournalHandle.open(4n, 'attach');
    assert.notEqual(j.interrupted, null);
    j.close();
  });
});
