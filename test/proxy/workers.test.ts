// accel proxy --workers: which kernels it may run on.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { reuseportGroupsAssignable } from '../../src/proxy/workers.js';

describe('proxy workers', () => {
  it('run only where bpf_sk_assign takes a socket of a SO_REUSEPORT group (Linux 6.5 and later)', () => {
    for (const r of ['6.5.0', '6.18.44-fc-v1300', '7.0.1', '10.1']) assert.equal(reuseportGroupsAssignable(r), true, r);
    for (const r of ['6.4.16', '5.15.0-91-generic', '4.19.0', 'garbage', '']) assert.equal(reuseportGroupsAssignable(r), false, r);
  });
});
