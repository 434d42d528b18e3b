// The node's set of attached cgroups is made by user space (whichever
// attachment or self-test needs it first) and joined by sockops.bpf.o and
// tc_tproxy.bpf.o: what user space makes must be what both objects
// declare, or libbpf refuses the pin. Read the declarations back from the
// objects' BTF.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { OwnersMapDef } from '../../src/maps/owners.js';
import { OWNERS_MAP } from '../../src/paths.js';
import { run } from '../../src/proc/run.js';
import { BPF_DIR } from '../helpers/env.js';

interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: { name: string; type_id: number }[];
}

async function declared(object: string) {
  const r = await run('bpftool', ['-j', 'btf', 'dump', 'file', path.join(BPF_DIR, object)]);
  const types = (JSON.parse(r.stdout) as { types: BtfType[] }).types;
  const byId = new Map(types.map((t) => [t.id, t]));
  const resolve = (id: number | undefined): BtfType => {
    let t = byId.get(id ?? -1);
    while (t && (t.kind === 'TYPEDEF' || t.kind === 'CONST' || t.kind === 'VOLATILE')) t = byId.get(t.type_id ?? -1);
    assert.ok(t, `BTF type ${id}`);
    return t;
  };
  const v = types.find((t) => t.kind === 'VAR' && t.name === OWNERS_MAP);
  assert.ok(v, `${OWNERS_MAP} is declared in ${object}`);
  const def = resolve(v.type_id);
  const member = (name: string) => {
    const m = def.members?.find((x) => x.name === name);
    assert.ok(m, `member ${name}`);
    return resolve(resolve(m.type_id).type_id); // __uint/__type declare pointers
  };
  const flags = def.members?.some((x) => x.name === 'map_flags') ? member('map_flags').nr_elems : 0;
  return { type: member('type').nr_elems, keySize: member('key').size, valueSize: member('value').size, maxEntries: member('max_entries').nr_elems, flags };
}

describe('accel_owners: user space makes the map the programs declare', () => {
  for (const object of ['sockops.bpf.o', 'tc_tproxy.bpf.o', 'cgroup_egress.bpf.o']) {
    it(`type, key, value and size agree with the BTF of ${object}`, async () => {
      assert.deepEqual(await declared(object), { ...OwnersMapDef });
    });
  }
});
