// The fast path's objects declare no map of the interception's, and reach
// the three sockops.c needs through slots whose inner map templates agree
// with the interception's own maps (bpf/include/accel_intercept_flows.h);
// otherwise the kernel refuses to put them in the slots at install time.
// Read from the objects' BTF, as libbpf reads a map definition.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SlotNames, TproxyMapNames } from '../../src/maps/tproxy.js';
import { type BtfType, btfTypes } from '../helpers/btf.js';

const mapVars = (types: Map<number, BtfType>) => [...types.values()].filter((t) => t.kind === 'VAR').map((t) => t.name);

/** Size of a type, through typedefs and qualifiers. */
function sizeOf(types: Map<number, BtfType>, id: number): number {
  const t = types.get(id);
  assert.ok(t, `type ${id}`);
  if (t.size !== undefined) return t.size;
  assert.ok(t.type_id !== undefined, `size of ${t.kind} ${t.name}`);
  return sizeOf(types, t.type_id);
}

/** A BTF map definition (struct of __uint/__type members) as the kernel
 * compares inner maps: type, flags, entries, key and value size. */
function definition(types: Map<number, BtfType>, def: BtfType) {
  const out: Record<string, number> = { map_flags: 0 };
  for (const m of def.members ?? []) {
    const ptr = types.get(m.type_id);
    assert.equal(ptr?.kind, 'PTR', `member ${m.name}`);
    const target = types.get(ptr.type_id ?? 0);
    assert.ok(target);
    if (m.name === 'key' || m.name === 'value') out[`${m.name}_size`] = sizeOf(types, target.id);
    // __uint(name, n): a pointer to an array of n ints.
    else if (target.kind === 'ARRAY') out[m.name] = target.nr_elems ?? 0;
  }
  return { type: out.type, map_flags: out.map_flags, max_entries: out.max_entries, key_size: out.key_size, value_size: out.value_size };
}

function varDefinition(types: Map<number, BtfType>, name: string) {
  const v = [...types.values()].find((t) => t.kind === 'VAR' && t.name === name);
  assert.ok(v?.type_id !== undefined, `map ${name} is declared`);
  const def = types.get(v.type_id);
  assert.ok(def);
  return definition(types, def);
}

const FAST_PATH_OBJECTS = ['sockops.bpf.o', 'skmsg.bpf.o', 'stream_verdict.bpf.o', 'iter_listeners.bpf.o'];
const SLOTTED = [
  [SlotNames.flows, 'accel_tproxy_flows_map', TproxyMapNames.flows],
  [SlotNames.closed, 'accel_tproxy_closed_map', TproxyMapNames.closed],
  [SlotNames.counters, 'accel_tproxy_counters_map', TproxyMapNames.counters],
] as const;

describe("the fast path's objects and the interception's maps", () => {
  it('no object of the fast path declares a map of the interception', async () => {
    for (const object of FAST_PATH_OBJECTS) {
      const declared = mapVars(await btfTypes(object));
      assert.deepEqual(
        Object.values(TproxyMapNames).filter((m) => declared.includes(m)),
        [],
        `${object} declares none of the interception's maps`,
      );
    }
    const sockops = mapVars(await btfTypes('sockops.bpf.o'));
    assert.deepEqual(
      Object.values(SlotNames).filter((s) => !sockops.includes(s)),
      [],
      'sockops.bpf.o declares the slots',
    );
  });

  it("each slot's inner map template agrees with the interception's map it holds (tc_tproxy.bpf.o)", async () => {
    const sockops = await btfTypes('sockops.bpf.o');
    const tproxy = await btfTypes('tc_tproxy.bpf.o');
    for (const [slot, template, inner] of SLOTTED) {
      const t = [...sockops.values()].find((x) => x.kind === 'STRUCT' && x.name === template);
      assert.ok(t, `the template of ${slot}, struct ${template}, is in sockops.bpf.o`);
      const want = varDefinition(tproxy, inner);
      const got = definition(sockops, t);
      // A hash's size is not compared by the kernel (the flows are sized by
      // attach --max-flows); an array's is.
      if (inner !== TproxyMapNames.counters) {
        delete (want as Partial<typeof want>).max_entries;
        delete (got as Partial<typeof got>).max_entries;
      }
      assert.deepEqual(got, want, `${slot} holds ${inner}`);
    }
  });
});
