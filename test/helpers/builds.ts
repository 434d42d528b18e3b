/**
 * Second builds of the BPF objects for the upgrade tests: a copy of the
 * normal build whose fast path objects (src/fastpath/build.ts) and
 * interception objects (src/intercept/build.ts) are compiled again with -D
 * defines (bpf/include/accel_common.h, accel.h), in a
 * directory of their own that accel is pointed at with --bpf-dir. Removed
 * when the test ends.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { FAST_PATH_OBJECTS } from '../../src/fastpath/build.js';
import { INTERCEPT_OBJECTS } from '../../src/intercept/build.js';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { run } from '../../src/proc/run.js';
import { BPF_DIR } from './env.js';

/** A build whose fast path and interception programs differ from the
 * normal build's and do the same. */
export const PROGRAM_VARIANT = '-DACCEL_TEST_PROGRAM_VARIANT=1';
/** A build whose accel_config map has a larger value (another layout). */
export const LAYOUT_VARIANT = '-DACCEL_TEST_LAYOUT_VARIANT -DACCEL_TEST_PROGRAM_VARIANT=2';
/** A build whose programs differ and whose interception map accel_tproxy_tw
 * has other flags (another layout); the fast path's maps fit. */
export const INTERCEPT_LAYOUT_VARIANT = '-DACCEL_TEST_INTERCEPT_LAYOUT_VARIANT -DACCEL_TEST_PROGRAM_VARIANT=3';

/** A build whose accel_shortcuts entries are larger (another layout):
 * accel proxy gives its connections no shortcut. */
export const SHORTCUT_LAYOUT_VARIANT = '-DACCEL_TEST_SHORTCUT_LAYOUT_VARIANT -DACCEL_TEST_PROGRAM_VARIANT=4';

const OBJECTS = [...FAST_PATH_OBJECTS, ...INTERCEPT_OBJECTS];

export async function variantBuild(t: TestContext, name: string, cflags: string): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `accel-build-${name}-`));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.cpSync(BPF_DIR, dir, { recursive: true });
  for (const f of OBJECTS) fs.rmSync(path.join(dir, f));
  await run('make', ['-s', '-C', path.join(PACKAGE_ROOT, 'bpf'), `BUILD=${dir}`, `EXTRA_CFLAGS=${cflags}`, ...OBJECTS.map((f) => path.join(dir, f))], {
    timeoutMs: 120_000,
  });
  for (const f of OBJECTS) {
    if (fs.readFileSync(path.join(dir, f)).equals(fs.readFileSync(path.join(BPF_DIR, f)))) throw new Error(`${f} of the ${name} build is the normal build's`);
  }
  return dir;
}
