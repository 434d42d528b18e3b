// The user-space mirror of bpf/include/accel.h must match the structs the
// compiler laid out: read them back from the BTF of the compiled objects.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { COUNTERS, COUNTER_ENUM, ConfigLayout, ListenKeyLayout, SockKeyLayout, SockStateLayout, decodeSockKey, encodeSockKey } from '../../src/maps/layout.js';
import { run } from '../../src/proc/run.js';
import { BPF_DIR } from '../helpers/env.js';

interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  members?: { name: string; bits_offset: number; type_id: number }[];
  values?: { name: string; val: number }[];
  nr_elems?: number;
  type_id?: number;
}

async function btfTypes(object: string): Promise<BtfType[]> {
  const r = await run('bpftool', ['-j', 'btf', 'dump', 'file', path.join(BPF_DIR, object)]);
  return (JSON.parse(r.stdout) as { types: BtfType[] }).types;
}

function layoutOf(types: BtfType[], name: string) {
  const t = types.find((x) => x.kind === 'STRUCT' && x.name === name);
  assert.ok(t, `struct ${name} is in the BTF`);
  return { size: t.size, fields: Object.fromEntries((t.members ?? []).map((m) => [m.name, m.bits_offset / 8])) };
}

function expectLayout(types: BtfType[], cName: string, mirror: { size: number; fields: Record<string, { offset: number }> }) {
  const actual = layoutOf(types, cName);
  assert.equal(actual.size, mirror.size, `sizeof(struct ${cName})`);
  assert.deepEqual(actual.fields, Object.fromEntries(Object.entries(mirror.fields).map(([k, v]) => [k, v.offset])), `offsets of struct ${cName}`);
}

describe('struct layouts agree between bpf/include/accel.h and src/maps/layout.ts', () => {
  it('sockops.bpf.o: accel_sock_key, accel_listen_key, accel_config', async () => {
    const types = await btfTypes('sockops.bpf.o');
    expectLayout(types, 'accel_sock_key', SockKeyLayout);
    expectLayout(types, 'accel_listen_key', ListenKeyLayout);
    expectLayout(types, 'accel_config', ConfigLayout);
  });

  it('skmsg.bpf.o: accel_sock_state and the same key', async () => {
    const types = await btfTypes('skmsg.bpf.o');
    expectLayout(types, 'accel_sock_state', SockStateLayout);
    expectLayout(types, 'accel_sock_key', SockKeyLayout);
  });

  it('counter indexes follow enum accel_counter', async () => {
    const types = await btfTypes('sockops.bpf.o');
    const e = types.find((x) => x.kind === 'ENUM' && x.name === 'accel_counter');
    assert.ok(e?.values, 'enum accel_counter is in the BTF');
    const byName = Object.fromEntries(e.values.map((v) => [v.name, v.val]));
    COUNTERS.forEach((c, i) => assert.equal(byName[COUNTER_ENUM[c]], i, `${COUNTER_ENUM[c]} = ${i}`));
    assert.equal(byName.ACCEL_CNT_MAX, COUNTERS.length, 'no counter is missing from the mirror');
  });
});

describe('sock key encoding', () => {
  it('round-trips IPv4 (as v4-mapped) and IPv6 keys', () => {
    for (const key of [
      { netns: 4026531840n, family: 'ipv4' as const, localAddress: '127.0.0.1', localPort: 80, remoteAddress: '10.1.2.3', remotePort: 54321 },
      { netns: 7n, family: 'ipv6' as const, localAddress: 'fd00:200::1', localPort: 443, remoteAddress: '::1', remotePort: 1 },
    ]) {
      const b = encodeSockKey(key);
      assert.equal(b.length, SockKeyLayout.size);
      assert.deepEqual(decodeSockKey(b), key);
    }
  });

  it('stores IPv4 as ::ffff:a.b.c.d in network byte order', () => {
    const b = encodeSockKey({ netns: 1n, family: 'ipv4', localAddress: '1.2.3.4', localPort: 1, remoteAddress: '5.6.7.8', remotePort: 2 });
    const ip = b.subarray(SockKeyLayout.fields.local_ip.offset, SockKeyLayout.fields.local_ip.offset + 16);
    assert.deepEqual([...ip], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4]);
  });
});
