// A BPF object's map declarations, read back from its BTF as libbpf reads
// them: the tests that check a map user space makes against the objects
// that join it.
import assert from 'node:assert/strict';
import path from 'node:path';
import { run } from '../../src/proc/run.js';
import { BPF_DIR } from './env.js';

export interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: { name: string; type_id: number }[];
}

/** The object's BTF types by id (bpftool's JSON dump). */
export async function btfTypes(object: string): Promise<Map<number, BtfType>> {
  const r = await run('bpftool', ['-j', 'btf', 'dump', 'file', path.join(BPF_DIR, object)]);
  return new Map((JSON.parse(r.stdout) as { types: BtfType[] }).types.map((t) => [t.id, t]));
}

/** A type through its typedefs and qualifiers. */
export function resolveType(types: Map<number, BtfType>, id: number | undefined): BtfType {
  let t = types.get(id ?? -1);
  while (t && (t.kind === 'TYPEDEF' || t.kind === 'CONST' || t.kind === 'VOLATILE')) t = types.get(t.type_id ?? -1);
  assert.ok(t, `BTF type ${id}`);
  return t;
}

/** The map `name` as `object` declares it (a struct of __uint/__type
 * members, each a pointer), and the name of its key's type. */
export async function declaredMap(object: string, name: string) {
  const types = await btfTypes(object);
  const v = [...types.values()].find((t) => t.kind === 'VAR' && t.name === name);
  assert.ok(v, `${name} is declared in ${object}`);
  const def = resolveType(types, v.type_id);
  const member = (m: string) => {
    const found = def.members?.find((x) => x.name === m);
    assert.ok(found, `member ${m} of ${name} in ${object}`);
    return resolveType(types, resolveType(types, found.type_id).type_id);
  };
  const has = (m: string) => def.members?.some((x) => x.name === m) ?? false;
  return {
    def: {
      type: member('type').nr_elems,
      keySize: member('key').size,
      valueSize: member('value').size,
      maxEntries: has('max_entries') ? member('max_entries').nr_elems : 0,
      flags: has('map_flags') ? member('map_flags').nr_elems : 0,
    },
    keyName: member('key').name,
  };
}
