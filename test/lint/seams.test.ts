// One style for test seams: environment variables, read only in
// src/seams.ts (validated there), each listed in README.md. Any other
// ACCEL_* variable src/ reads is a user setting named here.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { isAccelError } from '../../src/errors.js';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { SEAM_NAMES, seam } from '../../src/seams.js';

/** Settings for users (paths of build products and state, verify's
 * installer), not seams. */
const SETTINGS = ['ACCEL_BPF_DIR', 'ACCEL_SOCKPROBE', 'ACCEL_CONNRATE', 'ACCEL_IPCPAIR', 'ACCEL_STATE_DIR', 'ACCEL_BPFTRACE_INSTALL'];

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sources(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

describe('test seams', () => {
  const saved = { ...process.env };
  afterEach(() => {
    for (const name of SEAM_NAMES) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
  });

  it('only src/seams.ts reads a seam from the environment; any other ACCEL_* variable is a named setting', () => {
    const src = path.join(PACKAGE_ROOT, 'src');
    const stray: string[] = [];
    for (const file of sources(src)) {
      if (path.relative(src, file) === 'seams.ts') continue;
      const text = fs.readFileSync(file, 'utf8');
      for (const m of text.matchAll(/\benv(?:\.|\[')(ACCEL_[A-Z0-9_]+)/g)) {
        if (!SETTINGS.includes(m[1] ?? '')) stray.push(`${path.relative(src, file)}: ${m[1]}`);
      }
    }
    assert.deepEqual(stray, []);
  });

  it('every seam is listed in README.md', () => {
    const readme = fs.readFileSync(path.join(PACKAGE_ROOT, 'README.md'), 'utf8');
    assert.deepEqual(
      SEAM_NAMES.filter((n) => !readme.includes(`\`${n}`)),
      [],
    );
  });

  it('unset or empty is undefined; a value is validated, and a bad one is E_USAGE naming the variable', () => {
    delete process.env.ACCEL_TC_MODE;
    assert.equal(seam('ACCEL_TC_MODE'), undefined);
    process.env.ACCEL_TC_MODE = '';
    assert.equal(seam('ACCEL_TC_MODE'), undefined);
    process.env.ACCEL_TC_MODE = 'tc';
    assert.equal(seam('ACCEL_TC_MODE'), 'tc');
    process.env.ACCEL_SELFTEST_QUEUE_LIMIT = String(1 << 30);
    assert.equal(seam('ACCEL_SELFTEST_QUEUE_LIMIT'), 1 << 30);
    for (const [name, bad] of [
      ['ACCEL_TC_MODE', 'legacy'],
      ['ACCEL_SELFTEST_QUEUE_LIMIT', 'lots'],
      ['ACCEL_SELFTEST_QUEUE_LIMIT', '-1'],
    ] as const) {
      process.env[name] = bad;
      assert.throws(
        () => seam(name),
        (e: unknown) => isAccelError(e, 'E_USAGE') && e.message.includes(name),
        `${name}=${bad}`,
      );
    }
  });
});
