// The node's set of attached cgroups is made by user space (whichever
// attachment or self-test needs it first) and joined by sockops.bpf.o and
// tc_tproxy.bpf.o: what user space makes must be what both objects
// declare, or libbpf refuses the pin. Read the declarations back from the
// objects' BTF.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { OwnersMapDef } from '../../src/maps/owners.js';
import { OWNERS_MAP } from '../../src/paths.js';
import { declaredMap } from '../helpers/btf.js';

describe('accel_owners: user space makes the map the programs declare', () => {
  for (const object of ['sockops.bpf.o', 'tc_tproxy.bpf.o', 'cgroup_egress.bpf.o']) {
    it(`type, key, value and size agree with the BTF of ${object}`, async () => {
      assert.deepEqual((await declaredMap(object, OWNERS_MAP)).def, { ...OwnersMapDef });
    });
  }
});
