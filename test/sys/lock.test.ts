// The host-wide lock (flock on a file): held while fn runs, let go after it
// (also when fn throws), waited for while another open file holds it, and
// given up with E_BUSY after the timeout. Both forms, sync and async. No
// privileges: a file in a temporary directory.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { isAccelError, ErrorCodes } from '../../src/errors.js';
import { tryLock, withLock, withLockAsync } from '../../src/sys/lock.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-lock-'));
let n = 0;
const lockFile = () => {
  const file = path.join(dir, `lock-${n++}`);
  fs.writeFileSync(file, '');
  return file;
};
const heldElsewhere = (file: string) => {
  const probe = tryLock(file);
  probe?.release();
  return probe === null;
};
const busy = (err: unknown) => isAccelError(err, ErrorCodes.BUSY);

after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('withLock (sync)', () => {
  it('holds the lock while fn runs, returns its value, and lets go after', () => {
    const file = lockFile();
    assert.equal(
      withLock(file, () => {
        assert.equal(heldElsewhere(file), true, 'held during fn');
        return 42;
      }),
      42,
    );
    assert.equal(heldElsewhere(file), false, 'let go after fn');
  });
  it('lets go when fn throws', () => {
    const file = lockFile();
    assert.throws(
      () =>
        withLock(file, () => {
          throw new Error('boom');
        }),
      /boom/,
    );
    assert.equal(heldElsewhere(file), false);
  });
  it('makes the lock file 0600 when it is missing', () => {
    const file = path.join(dir, 'made');
    withLock(file, () => undefined);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
  });
  it('gives up with E_BUSY while another holds it, without running fn', () => {
    const file = lockFile();
    const other = tryLock(file);
    assert.ok(other);
    let ran = false;
    try {
      assert.throws(() => withLock(file, () => (ran = true), 50), busy);
    } finally {
      other.release();
    }
    assert.equal(ran, false);
    assert.equal(heldElsewhere(file), false, 'the waiter holds nothing after giving up');
  });
});

describe('withLockAsync', () => {
  it('waits until the holder lets go, then runs fn holding the lock', async () => {
    const file = lockFile();
    const other = tryLock(file);
    assert.ok(other);
    let released = false;
    setTimeout(() => {
      released = true;
      other.release();
    }, 50);
    const out = await withLockAsync(file, async () => {
      assert.equal(released, true, 'fn ran only after the holder let go');
      assert.equal(heldElsewhere(file), true, 'held during fn');
      await new Promise((r) => setTimeout(r, 5));
      assert.equal(heldElsewhere(file), true, 'still held across an await in fn');
      return 'done';
    });
    assert.equal(out, 'done');
    assert.equal(heldElsewhere(file), false, 'let go after fn settled');
  });
  it('lets go when fn rejects', async () => {
    const file = lockFile();
    await assert.rejects(
      withLockAsync(file, async () => {
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.equal(heldElsewhere(file), false);
  });
  it('gives up with E_BUSY while another holds it, without running fn', async () => {
    const file = lockFile();
    const other = tryLock(file);
    assert.ok(other);
    let ran = false;
    try {
      await assert.rejects(
        withLockAsync(
          file,
          async () => {
            ran = true;
          },
          50,
        ),
        busy,
      );
    } finally {
      other.release();
    }
    assert.equal(ran, false);
    assert.equal(heldElsewhere(file), false);
  });
});

describe('tryLock', () => {
  it('takes a free lock at once, and answers null while it is held', () => {
    const file = lockFile();
    const a = tryLock(file);
    assert.ok(a);
    assert.equal(tryLock(file), null);
    a.release();
    a.release();
    const b = tryLock(file);
    assert.ok(b, 'free again after release (twice is harmless)');
    b.release();
  });
});
