// The node's map of proxy listeners is made by user space (a proxy may
// start before any attachment) and joined by tc_tproxy.bpf.o: what user
// space makes must be what the object declares, or attach refuses the pin.
// Read the declaration back from the object's BTF.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ProxyKeyLayout, ProxyListenersMapDef, ProxySocketsMapDef, decodeProxyKey, encodeProxyKey } from '../../src/maps/layout/tproxy.js';
import { PROXY_LISTENERS_MAP, PROXY_SOCKETS_MAP } from '../../src/paths.js';
import { declaredMap } from '../helpers/btf.js';

describe('accel_proxy_listeners: user space makes the map tc_tproxy.bpf.o declares', () => {
  it('type, key, value and size agree with the BTF of tc_tproxy.bpf.o', async () => {
    const { def, keyName } = await declaredMap('tc_tproxy.bpf.o', PROXY_LISTENERS_MAP);
    assert.deepEqual(def, { ...ProxyListenersMapDef });
    assert.equal(keyName, 'accel_proxy_key');
  });

  it('accel_proxy_sockets, which user space checks a pin against, is what tc_tproxy.bpf.o, cgroup_egress.bpf.o, proxy_sockets.bpf.o and proxy_sock_create.bpf.o declare', async () => {
    for (const object of ['tc_tproxy.bpf.o', 'cgroup_egress.bpf.o', 'proxy_sockets.bpf.o', 'proxy_sock_create.bpf.o']) {
      const { def } = await declaredMap(object, PROXY_SOCKETS_MAP);
      const { maxEntries, ...rest } = ProxySocketsMapDef;
      assert.equal(maxEntries, 0);
      assert.deepEqual(def, { ...rest, maxEntries: 0 }, object);
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
