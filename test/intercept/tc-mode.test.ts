// The tc attachment mode override (no root needed: the override is read
// before any probe).
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { isAccelError } from '../../src/errors.js';
import { tcMode } from '../../src/intercept/hooks.js';

describe('tcMode', () => {
  const saved = process.env.ACCEL_TC_MODE;
  afterEach(() => {
    if (saved === undefined) delete process.env.ACCEL_TC_MODE;
    else process.env.ACCEL_TC_MODE = saved;
  });

  it('ACCEL_TC_MODE=tc forces the tc-filter fallback', () => {
    process.env.ACCEL_TC_MODE = 'tc';
    assert.equal(tcMode(), 'tc');
  });

  it('refuses any other value than tcx or tc with E_USAGE', () => {
    for (const v of ['TCX', 'legacy', 'tc ']) {
      process.env.ACCEL_TC_MODE = v;
      assert.throws(
        () => tcMode(),
        (e) => isAccelError(e, 'E_USAGE'),
        v,
      );
    }
  });
});
