// The capabilities accel needs, with the capability set injected.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isAccelError } from '../../src/errors.js';
import { requirePrivileges } from '../../src/privileges.js';

describe('privileges', () => {
  it('needs CAP_BPF (or CAP_SYS_ADMIN) and CAP_NET_ADMIN', () => {
    const NET_ADMIN = 1n << 12n;
    const SYS_ADMIN = 1n << 21n;
    const BPF = 1n << 39n;
    assert.doesNotThrow(() => requirePrivileges(NET_ADMIN | BPF));
    assert.doesNotThrow(() => requirePrivileges(NET_ADMIN | SYS_ADMIN));
    assert.throws(
      () => requirePrivileges(BPF),
      (e: unknown) => isAccelError(e, 'E_PERMISSION') && /CAP_NET_ADMIN/.test(e.message),
    );
    assert.throws(
      () => requirePrivileges(0n),
      (e: unknown) => isAccelError(e, 'E_PERMISSION') && /CAP_BPF and CAP_NET_ADMIN/.test(e.message),
    );
  });
});
