// The user-space mirrors of bpf/include/accel.h (src/maps/layout/, one
// module per component) must match the structs the compiler laid out: read
// them back from the BTF of layout.btf.o (bpf/layout.c), which holds one
// variable of each mirrored struct and enum and is never loaded.
import assert from 'node:assert/strict';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { FASTPATH_BTF } from '../../src/maps/layout/fastpath.js';
import {
  type BtfMirrors,
  type EnumMirror,
  SHARED_BTF,
  SockKeyLayout,
  type StructLayout,
  decodeSockKey,
  encodeSockKey,
  reversedSockKey,
  sockKeyOf,
} from '../../src/maps/layout/shared.js';
import { SPLICE_BTF } from '../../src/maps/layout/splice.js';
import { InterceptRuleLayout, TPROXY_BTF, encodeInterceptRule } from '../../src/maps/layout/tproxy.js';
import { run } from '../../src/proc/run.js';
import { BPF_DIR } from '../helpers/env.js';

const LAYOUT_OBJECT = 'layout.btf.o';

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

/** Byte offset of each member; an anonymous union's members (bpftool names
 * the union "(anon)") count as the struct's own, at the union's offset. */
function memberOffsets(types: BtfType[], t: BtfType, base = 0): [string, number][] {
  return (t.members ?? []).flatMap((m): [string, number][] => {
    const at = base + m.bits_offset / 8;
    const inner = m.name === '(anon)' || m.name === '' ? types.find((x) => x.id === m.type_id && x.kind === 'UNION') : undefined;
    return inner ? memberOffsets(types, inner, at) : [[m.name, at]];
  });
}

function layoutOf(types: BtfType[], name: string) {
  const t = types.find((x) => x.kind === 'STRUCT' && x.name === name);
  assert.ok(t, `struct ${name} is in the BTF of ${LAYOUT_OBJECT} (an anchor in bpf/layout.c)`);
  return { size: t.size, fields: Object.fromEntries(memberOffsets(types, t)) };
}

function expectLayout(types: BtfType[], cName: string, mirror: StructLayout) {
  const actual = layoutOf(types, cName);
  assert.equal(actual.size, mirror.size, `sizeof(struct ${cName})`);
  assert.deepEqual(actual.fields, Object.fromEntries(Object.entries(mirror.fields).map(([k, v]) => [k, v.offset])), `offsets of struct ${cName}`);
}

/** The mirror's enumerators, in index order, are the C ones in order, and
 * none is missing before the MAX enumerator. */
function expectEnum(types: BtfType[], cEnum: string, mirror: EnumMirror) {
  const e = types.find((x) => x.kind === 'ENUM' && x.name === cEnum);
  assert.ok(e?.values, `enum ${cEnum} is in the BTF of ${LAYOUT_OBJECT} (an anchor in bpf/layout.c)`);
  const byName = Object.fromEntries(e.values.map((v) => [v.name, v.val]));
  mirror.enumerators.forEach((c, i) => assert.equal(byName[c], i, `${c} = ${i}`));
  assert.equal(byName[mirror.max], mirror.enumerators.length, `no enumerator of ${cEnum} is missing from the mirror`);
}

const COMPONENTS: Record<string, BtfMirrors> = { shared: SHARED_BTF, fastpath: FASTPATH_BTF, tproxy: TPROXY_BTF, splice: SPLICE_BTF };

describe(`struct layouts agree between bpf/include/accel.h and src/maps/layout/ (BTF of ${LAYOUT_OBJECT})`, () => {
  let types: BtfType[] = [];
  before(async () => {
    types = await btfTypes(LAYOUT_OBJECT);
  });

  for (const [component, mirrors] of Object.entries(COMPONENTS)) {
    it(`${component}: ${[...Object.keys(mirrors.structs).map((s) => `struct ${s}`), ...Object.keys(mirrors.enums).map((e) => `enum ${e}`)].join(', ')}`, () => {
      for (const [cName, layout] of Object.entries(mirrors.structs)) expectLayout(types, cName, layout);
      for (const [cEnum, mirror] of Object.entries(mirrors.enums)) expectEnum(types, cEnum, mirror);
    });
  }

  it('every struct and enum of the layout object has one mirror', () => {
    const mirrored = Object.values(COMPONENTS).flatMap((m) => [...Object.keys(m.structs), ...Object.keys(m.enums)]);
    assert.equal(new Set(mirrored).size, mirrored.length, 'no struct or enum is mirrored twice');
    const inBtf = types.filter((t) => (t.kind === 'STRUCT' || t.kind === 'ENUM') && t.name.startsWith('accel_')).map((t) => t.name);
    assert.deepEqual([...inBtf].sort(), [...mirrored].sort());
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

describe('the key of a socket as node reports it', () => {
  const ends = { localAddress: '::ffff:127.0.0.1', localPort: 40000, remoteAddress: '::ffff:127.0.0.2', remotePort: 7411 };
  it('reads an IPv4-mapped address as IPv4, as the kernel keys the socket', () => {
    assert.deepEqual(decodeSockKey(sockKeyOf(7n, ends)), { netns: 7n, family: 'ipv4', localAddress: '127.0.0.1', localPort: 40000, remoteAddress: '127.0.0.2', remotePort: 7411 });
  });
  it("gives the peer's key with the two ends swapped", () => {
    assert.deepEqual(decodeSockKey(sockKeyOf(7n, ends, true)), {
      netns: 7n,
      family: 'ipv4',
      localAddress: '127.0.0.2',
      localPort: 7411,
      remoteAddress: '127.0.0.1',
      remotePort: 40000,
    });
    const v6 = { localAddress: '::1', localPort: 1, remoteAddress: 'fd00::2', remotePort: 2 };
    assert.deepEqual(decodeSockKey(sockKeyOf(1n, v6, true)), { netns: 1n, family: 'ipv6', localAddress: 'fd00::2', localPort: 2, remoteAddress: '::1', remotePort: 1 });
  });
  it("turns a socket's own key into its peer's, byte for byte as sockKeyOf builds it", () => {
    const v6 = { localAddress: '::1', localPort: 1, remoteAddress: 'fd00::2', remotePort: 2 };
    for (const [netns, e] of [
      [7n, ends],
      [1n, v6],
    ] as const) {
      const own = sockKeyOf(netns, e);
      const copy = Buffer.from(own);
      assert.deepEqual(reversedSockKey(own), sockKeyOf(netns, e, true));
      assert.deepEqual(reversedSockKey(reversedSockKey(own)), own);
      assert.deepEqual(own, copy, 'the own key is left as it was');
    }
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
