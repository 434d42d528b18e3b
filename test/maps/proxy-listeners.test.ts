// The node's map of proxy listeners is made by user space (a proxy may
// start before any attachment) and joined by tc_tproxy.bpf.o: what user
// space makes must be what the object declares, or attach refuses the pin.
// Read the declaration back from the object's BTF.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ProxyKeyLayout, ProxyListenersMapDef, ProxySocketsMapDef, decodeProxyKey, encodeProxyKey } from '../../src/maps/layout/tproxy.js';
import { PROXY_LISTENERS_MAP, PROXY_SOCKETS_MAP } from '../../src/paths.js';
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

describe('accel_proxy_listeners: user space makes the map tc_tproxy.bpf.o declares', () => {
  it('type, key, value and size agree with the BTF of tc_tproxy.bpf.o', async () => {
    const r = await run('bpftool', ['-j', 'btf', 'dump', 'file', path.join(BPF_DIR, 'tc_tproxy.bpf.o')]);
    const types = (JSON.parse(r.stdout) as { types: BtfType[] }).types;
    const byId = new Map(types.map((t) => [t.id, t]));
    const resolve = (id: number | undefined): BtfType => {
      let t = byId.get(id ?? -1);
      while (t && (t.kind === 'TYPEDEF' || t.kind === 'CONST' || t.kind === 'VOLATILE')) t = byId.get(t.type_id ?? -1);
      assert.ok(t, `BTF type ${id}`);
      return t;
    };
    const v = types.find((t) => t.kind === 'VAR' && t.name === PROXY_LISTENERS_MAP);
    assert.ok(v, `${PROXY_LISTENERS_MAP} is declared in tc_tproxy.bpf.o`);
    const def = resolve(v.type_id);
    const member = (name: string) => {
      const m = def.members?.find((x) => x.name === name);
      assert.ok(m, `member ${name}`);
      return resolve(resolve(m.type_id).type_id); // __uint/__type declare pointers
    };
    const flags = def.members?.some((x) => x.name === 'map_flags') ? member('map_flags').nr_elems : 0;
    assert.deepEqual(
      { type: member('type').nr_elems, keySize: member('key').size, valueSize: member('value').size, maxEntries: member('max_entries').nr_elems, flags },
      { ...ProxyListenersMapDef },
    );
    assert.equal(member('key').name, 'accel_proxy_key');
  });

  it('accel_proxy_sockets, which user space checks a pin against, is what tc_tproxy.bpf.o, cgroup_egress.bpf.o, proxy_sockets.bpf.o and proxy_sock_create.bpf.o declare', async () => {
    for (const object of ['tc_tproxy.bpf.o', 'cgroup_egress.bpf.o', 'proxy_sockets.bpf.o', 'proxy_sock_create.bpf.o']) {
      const r = await run('bpftool', ['-j', 'btf', 'dump', 'file', path.join(BPF_DIR, object)]);
      const types = (JSON.parse(r.stdout) as { types: BtfType[] }).types;
      const byId = new Map(types.map((t) => [t.id, t]));
      const resolve = (id: number | undefined): BtfType => {
        let t = byId.get(id ?? -1);
        while (t && (t.kind === 'TYPEDEF' || t.kind === 'CONST' || t.kind === 'VOLATILE')) t = byId.get(t.type_id ?? -1);
        assert.ok(t, `BTF type ${id}`);
        return t;
      };
      const v = types.find((t) => t.kind === 'VAR' && t.name === PROXY_SOCKETS_MAP);
      assert.ok(v, `${PROXY_SOCKETS_MAP} is declared in ${object}`);
      const def = resolve(v.type_id);
      const member = (name: string) => {
        const m = def.members?.find((x) => x.name === name);
        assert.ok(m, `member ${name}`);
        return resolve(resolve(m.type_id).type_id);
      };
      const { maxEntries, ...rest } = ProxySocketsMapDef;
      assert.equal(maxEntries, 0);
      assert.deepEqual({ type: member('type').nr_elems, keySize: member('key').size, valueSize: member('value').size, flags: member('map_flags').nr_elems }, rest, object);
    }
  });

  it('keys round-trip', () => {
    for (const key of [
      { netns: 4096n, family: 4 as const, port: 15001 },
      { netns: 1n << 40n, family: 6 as const, port: 1 },
    ]) {
      const b = encodeProxyKey(key);
      assert.equal(b.length, ProxyKeyLayout.size);
      assert.deepEqual(decodeProxyKey(b), key);
    }
  });
});
