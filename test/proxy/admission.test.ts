import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { describe, it } from 'node:test';
import { chooseDataPath, factsOf, readFirstBytes } from '../../src/proxy/admission.js';
import { Policy } from '../../src/proxy/policy.js';
import { handshakeOf, inRecords, realClientHello } from '../helpers/tls-hello.js';

/** What the proxy would decide for a client that sends `bytes` (or nothing)
 * and then waits. */
async function decideFor(policy: Policy, bytes: Buffer | null, timeoutMs = 100) {
  const server = net.createServer({ pauseOnConnect: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  client.on('error', () => {});
  const [sock] = (await once(server, 'connection')) as [net.Socket];
  if (bytes) client.write(bytes);
  const { sniffed } = await readFirstBytes(sock, timeoutMs);
  client.destroy();
  sock.destroy();
  server.close();
  return policy.decide({ destination: '192.0.2.1', port: 443, ...factsOf(sniffed) });
}

describe('proxy admission', () => {
  const denySni = Policy.parse({ rules: [{ action: 'deny', sni: 'blocked.test' }] });

  it('denies under `deny sni` a client that sends nothing, or not enough, within the sniff timeout', async () => {
    assert.equal((await decideFor(denySni, null)).action, 'deny');
    const hello = await realClientHello('ok.test');
    assert.equal((await decideFor(denySni, hello.subarray(0, 40))).action, 'deny', 'a partial ClientHello');
    assert.equal((await decideFor(denySni, hello)).action, 'allow', 'a whole one naming another host');
  });

  it('denies under `deny sni` a ClientHello split into two records', async () => {
    const split = inRecords(handshakeOf(await realClientHello('blocked.test')), [50]);
    assert.deepEqual(await decideFor(denySni, split), { action: 'deny', reason: 'rule 1', splice: true, dependsOnHost: false });
  });

  it('keeps HTTP decided by Host out of the kernel and out of the blind relay', () => {
    const p = Policy.parse({ rules: [{ action: 'deny', host: 'internal.test' }] });
    const http = { protocol: 'http' as const, host: 'a.test' };
    const splicing = { canSplice: true, onFastPath: () => false };
    assert.equal(chooseDataPath(p.decide({ destination: '192.0.2.1', port: 80, ...http }), http, splicing), 'inspect');
    assert.equal(chooseDataPath(p.decide({ destination: '192.0.2.1', port: 80, ...http }), http, { canSplice: false, onFastPath: () => false }), 'inspect');
    const tls = { protocol: 'tls' as const, sni: 'a.test' };
    assert.equal(chooseDataPath(p.decide({ destination: '192.0.2.1', port: 443, ...tls }), tls, splicing), 'splice', 'an SNI cannot change on the connection');
    const byPort = Policy.parse({
      rules: [
        { action: 'allow', ports: 80 },
        { action: 'deny', host: 'internal.test' },
      ],
    });
    assert.equal(chooseDataPath(byPort.decide({ destination: '192.0.2.1', port: 80, ...http }), http, splicing), 'splice', 'decided before any Host rule');
    assert.equal(chooseDataPath(byPort.decide({ destination: '192.0.2.1', port: 80, ...http }), http, { canSplice: true, onFastPath: () => true }), 'relay-fastpath');
  });

  it('gives a shortcut only where the rule allows splicing and the connection is not inspected', () => {
    const http = { protocol: 'http' as const, host: 'a.test' };
    const tls = { protocol: 'tls' as const, sni: 'a.test' };
    let asked = 0;
    const o = { canSplice: false, onFastPath: () => true, canShortcut: () => ++asked > 0 };
    const p = Policy.parse({
      rules: [
        { action: 'allow', host: 'a.test' },
        { action: 'allow', ports: 443, splice: false },
        { action: 'allow', ports: 22 },
      ],
    });
    assert.equal(chooseDataPath(p.decide({ destination: '192.0.2.1', port: 80, ...http }), http, o), 'inspect');
    assert.equal(chooseDataPath(p.decide({ destination: '192.0.2.1', port: 443, ...tls }), tls, o), 'relay');
    assert.equal(asked, 0, 'not even asked for an inspected or a splice:false connection');
    assert.equal(chooseDataPath(p.decide({ destination: '192.0.2.1', port: 22 }), {}, o), 'shortcut');
    assert.equal(chooseDataPath(p.decide({ destination: '192.0.2.1', port: 22 }), {}, { ...o, canShortcut: () => false }), 'relay');
  });
});
