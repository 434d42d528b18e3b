// Kernel feature checks, with the probe injected (the real kernel has them).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { probeFastPathFeatures } from '../../src/bpf/features.js';
import { isAccelError } from '../../src/errors.js';
import { requireKernelFeatures } from '../../src/fastpath/install.js';
import { requirePrivileges } from '../../src/privileges.js';

describe('kernel features', () => {
  it('this kernel has everything the fast path needs', () => {
    const missing = probeFastPathFeatures().filter((f) => !f.present);
    assert.deepEqual(missing, []);
    assert.doesNotThrow(() => requireKernelFeatures());
  });

  it('a kernel without sockhash or sk_msg is refused with E_KERNEL_FEATURE, naming what is missing', () => {
    const prober = () => [
      { name: 'sockhash map', present: false },
      { name: 'sk_msg program', present: false },
      { name: 'sock_ops program', present: true },
    ];
    assert.throws(
      () => requireKernelFeatures(prober),
      (e: unknown) => isAccelError(e, 'E_KERNEL_FEATURE') && /sockhash map, sk_msg program/.test(e.message),
    );
  });
});

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
