// The user-space mirror of bpf/include/accel.h must match the structs the
// compiler laid out: read them back from the BTF of the compiled objects.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { COUNTERS, COUNTER_ENUM, ConfigLayout, MemberLayout, SPLICE_COUNTERS, SPLICE_COUNTER_ENUM, SpliceSockLayout, InterceptRuleLayout, TPROXY_COUNTERS, TPROXY_COUNTER_ENUM, TproxyConfigLayout, TproxyFlowLayout, encodeInterceptRule, ListenKeyLayout, ListenerRecLayout, SockKeyLayout, SockStateLayout, decodeSockKey, encodeSockKey } from '../../src/maps/layout.js';
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

/** The mirror's counter names, in index order, are the C enumerators in
 * order, and none is missing before the MAX enumerator. */
function expectEnum<K extends string>(types: BtfType[], cEnum: string, names: readonly K[], enumNames: Record<K, string>, maxName: string) {
  const e = types.find((x) => x.kind === 'ENUM' && x.name === cEnum);
  assert.ok(e?.values, `enum ${cEnum} is in the BTF`);
  const byName = Object.fromEntries(e.values.map((v) => [v.name, v.val]));
  names.forEach((c, i) => assert.equal(byName[enumNames[c]], i, `${enumNames[c]} = ${i}`));
  assert.equal(byName[maxName], names.length, 'no counter is missing from the mirror');
}

describe('struct layouts agree between bpf/include/accel.h and src/maps/layout.ts', () => {
  it('sockops.bpf.o: accel_sock_key, accel_listen_key, accel_config, accel_member', async () => {
    const types = await btfTypes('sockops.bpf.o');
    expectLayout(types, 'accel_member', MemberLayout);
    expectLayout(types, 'accel_sock_key', SockKeyLayout);
    expectLayout(types, 'accel_listen_key', ListenKeyLayout);
    expectLayout(types, 'accel_config', ConfigLayout);
  });

  it('iter_listeners.bpf.o: accel_listener_rec and the listener key', async () => {
    const types = await btfTypes('iter_listeners.bpf.o');
    expectLayout(types, 'accel_listener_rec', ListenerRecLayout);
    expectLayout(types, 'accel_listen_key', ListenKeyLayout);
  });

  it('skmsg.bpf.o: accel_sock_state and the same key', async () => {
    const types = await btfTypes('skmsg.bpf.o');
    expectLayout(types, 'accel_sock_state', SockStateLayout);
    expectLayout(types, 'accel_sock_key', SockKeyLayout);
  });

  it('tc_tproxy.bpf.o: accel_intercept_rule, accel_tproxy_config and the flow key', async () => {
    const types = await btfTypes('tc_tproxy.bpf.o');
    expectLayout(types, 'accel_intercept_rule', InterceptRuleLayout);
    expectLayout(types, 'accel_tproxy_config', TproxyConfigLayout);
    expectLayout(types, 'accel_tproxy_flow', TproxyFlowLayout);
    expectLayout(types, 'accel_sock_key', SockKeyLayout);
  });

  it('sksplice.bpf.o: accel_splice_sock', async () => {
    expectLayout(await btfTypes('sksplice.bpf.o'), 'accel_splice_sock', SpliceSockLayout);
  });

  it('interception counter indexes follow enum accel_tproxy_counter', async () => {
    expectEnum(await btfTypes('tc_tproxy.bpf.o'), 'accel_tproxy_counter', TPROXY_COUNTERS, TPROXY_COUNTER_ENUM, 'ACCEL_TP_MAX');
  });

  it('counter indexes follow enum accel_counter', async () => {
    expectEnum(await btfTypes('sockops.bpf.o'), 'accel_counter', COUNTERS, COUNTER_ENUM, 'ACCEL_CNT_MAX');
  });

  it('splice counter indexes follow enum accel_splice_counter', async () => {
    expectEnum(await btfTypes('sksplice.bpf.o'), 'accel_splice_counter', SPLICE_COUNTERS, SPLICE_COUNTER_ENUM, 'ACCEL_SPLICE_CNT_MAX');
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

describe('intercept rule encoding', () => {
  it('masks an IPv4 prefix over the v4-mapped form', () => {
    const b = encodeInterceptRule({ text: '', address: '10.200.7.9', prefixLength: 20, family: 'ipv4', portMin: 80, portMax: 90 });
    const f = InterceptRuleLayout.fields;
    assert.deepEqual([...b.subarray(f.ip.offset, f.ip.offset + 16)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 200, 0, 0]);
    assert.deepEqual([...b.subarray(f.mask.offset, f.mask.offset + 16)], [...new Array(12).fill(0xff), 0xff, 0xff, 0xf0, 0]);
    assert.equal(b.readUInt32LE(f.port_min.offset), 80);
    assert.equal(b.readUInt32LE(f.port_max.offset), 90);
  });

  it('masks an IPv6 prefix, /0 matching everything', () => {
    const f = InterceptRuleLayout.fields;
    const b = encodeInterceptRule({ text: '', address: 'fd00:200::1', prefixLength: 64, family: 'ipv6', portMin: 1, portMax: 65535 });
    assert.deepEqual([...b.subarray(f.ip.offset, f.ip.offset + 16)], [0xfd, 0, 0x02, 0, ...new Array(12).fill(0)]);
    assert.deepEqual([...b.subarray(f.mask.offset, f.mask.offset + 16)], [...new Array(8).fill(0xff), ...new Array(8).fill(0)]);
    const any = encodeInterceptRule({ text: '', address: '::', prefixLength: 0, family: 'ipv6', portMin: 1, portMax: 65535 });
    assert.ok(any.subarray(0, 32).every((x) => x === 0));
  });
});
