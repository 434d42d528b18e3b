import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { describe, it } from 'node:test';
import { readFirstBytes } from '../../src/proxy/admission.js';
import { type RequestVerdict, relayInspected } from '../../src/proxy/http-inspect.js';
import type { RequestHead } from '../../src/proxy/http-head.js';

const denyBlocked = (head: RequestHead): RequestVerdict => (head.name && head.name !== 'blocked.test' ? { ok: true } : { ok: false, reason: `host ${head.name}` });

/** A client -> inspected relay -> upstream chain on loopback; resolves when
 * everything closed, with what the upstream received. */
async function throughInspector(writes: string[], check = denyBlocked, reply?: Buffer) {
  const received: Buffer[] = [];
  const upstreamServer = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('data', (d: Buffer) => received.push(d));
    if (reply) s.write(reply);
    s.on('end', () => s.end());
    s.on('error', () => {});
  });
  upstreamServer.listen(0, '127.0.0.1');
  await once(upstreamServer, 'listening');
  const proxy = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
  proxy.listen(0, '127.0.0.1');
  await once(proxy, 'listening');
  const client = net.connect({ port: (proxy.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  let clientError: string | undefined;
  client.on('error', (e: NodeJS.ErrnoException) => (clientError = e.code));
  const clientGot: Buffer[] = [];
  client.on('data', (d: Buffer) => clientGot.push(d));
  const [sock] = (await once(proxy, 'connection')) as [net.Socket];
  sock.on('error', () => {});
  for (const w of writes) {
    client.write(Buffer.from(w, 'latin1'));
    await new Promise((r) => setTimeout(r, 20));
  }
  client.end();
  const { bytes } = await readFirstBytes(sock, 100);
  const upstream = net.connect({ port: (upstreamServer.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  await once(upstream, 'connect');
  const result = await relayInspected(sock, upstream, bytes, check);
  // Not once(): it rejects on the reset the test may be waiting for.
  if (!client.destroyed) await new Promise((r) => client.once('close', r));
  upstreamServer.close();
  proxy.close();
  return { result, upstreamGot: Buffer.concat(received).toString('latin1'), clientGot: Buffer.concat(clientGot), clientError };
}

const get = (host: string) => `GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`;

describe('inspected HTTP relay', () => {
  it('cuts a keep-alive connection at the first request for a denied Host, after forwarding the ones before', async () => {
    const { result, upstreamGot, clientError } = await throughInspector([get('a.test'), get('b.test') + get('blocked.test'), get('c.test')]);
    assert.equal(upstreamGot, get('a.test') + get('b.test'));
    assert.deepEqual(result.refused, { reason: 'host blocked.test', request: 3, host: 'blocked.test' });
    assert.equal(clientError, 'ECONNRESET');
  });

  it('checks an absolute-form request that disagrees with its Host as having no name', async () => {
    const { result, upstreamGot } = await throughInspector([get('a.test'), 'GET http://blocked.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n']);
    assert.equal(upstreamGot, get('a.test'));
    assert.equal(result.refused?.request, 2);
  });

  it('follows bodies by Content-Length and chunked coding: a body is never read as a request, the request after it is', async () => {
    const hidden = get('blocked.test');
    const post = `POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: ${hidden.length}\r\n\r\n${hidden}`;
    const chunked = `POST /c HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n${hidden.length.toString(16)}\r\n${hidden}\r\n0\r\nT: 1\r\n\r\n`;
    const allowed = await throughInspector([post, chunked.slice(0, 70), chunked.slice(70), get('b.test')]);
    assert.equal(allowed.result.refused, undefined);
    assert.equal(allowed.upstreamGot, post + chunked + get('b.test'));
    assert.equal(allowed.result.requests, 3);
    const after = await throughInspector([chunked + get('blocked.test')]);
    assert.equal(after.upstreamGot, chunked);
    assert.equal(after.result.refused?.host, 'blocked.test');
  });

  it('closes rather than follow what it cannot frame: Upgrade, CONNECT, CL with TE, a bad chunk', async () => {
    for (const bad of [
      'GET /ws HTTP/1.1\r\nHost: a.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
      'CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n',
      'POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
      'POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n',
    ]) {
      const r = await throughInspector([get('a.test'), bad, get('b.test')]);
      assert.equal(r.result.refused?.request, 2, bad);
      assert.equal(r.upstreamGot.startsWith(get('a.test')) && !r.upstreamGot.includes('b.test'), true, bad);
    }
  });

  it('cuts a body that a server could read as a second request for a denied Host, and marks it as refused framing', async () => {
    const smuggled = `GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: ${get('blocked.test').length}\r\n\r\n${get('blocked.test')}`;
    const r = await throughInspector([get('a.test'), smuggled]);
    assert.equal(r.upstreamGot, get('a.test'), 'nothing of the ambiguous request went upstream');
    assert.deepEqual(r.result.refused, { reason: 'a body on GET', request: 2, host: undefined, framing: true });
    assert.equal(r.clientError, 'ECONNRESET');
  });

  it('relays an allowed connection to the end, half-close included', async () => {
    const r = await throughInspector([get('a.test'), get('b.test')]);
    assert.equal(r.result.refused, undefined);
    assert.equal(r.upstreamGot, get('a.test') + get('b.test'));
    assert.equal(r.clientError, undefined);
  });

  it('sends the response back byte-exact, a large one included', { timeout: 10_000 }, async () => {
    const body = Buffer.alloc(6 * 1024 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = (i * 7919) >>> 8;
    const response = Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`), body]);
    const r = await throughInspector([get('a.test')], denyBlocked, response);
    assert.equal(r.result.refused, undefined);
    assert.equal(r.clientGot.length, response.length);
    assert.ok(r.clientGot.equals(response), 'the response differs');
    assert.equal(r.result.down, response.length);
  });
});
