import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { describe, it } from 'node:test';
import { sniff } from '../../src/proxy/sniff.js';

/** The ClientHello node's TLS stack sends for `servername`. */
function clientHello(servername: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((s) => {
      s.once('data', (d: Buffer) => {
        resolve(d);
        s.destroy();
        server.close();
      });
    });
    server.listen(0, '127.0.0.1', () => {
      const c = tls.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', servername, rejectUnauthorized: false });
      c.on('error', () => {});
    });
    server.on('error', reject);
  });
}

describe('first-bytes sniffing', () => {
  it("reads the SNI from a real ClientHello, and waits for the rest of a partial one", async () => {
    const hello = await clientHello('svc.example.com');
    assert.deepEqual(sniff(hello), { kind: 'tls', sni: 'svc.example.com' });
    assert.deepEqual(sniff(hello.subarray(0, 40)), { kind: 'incomplete' });
  });

  it('reads the Host of an HTTP/1 request, without its port', () => {
    assert.deepEqual(sniff(Buffer.from('GET / HTTP/1.1\r\nHost: api.test:8080\r\nAccept: */*\r\n\r\n')), { kind: 'http', host: 'api.test' });
    assert.deepEqual(sniff(Buffer.from('GET / HTTP/1.1\r\nHo')), { kind: 'incomplete' });
    assert.deepEqual(sniff(Buffer.from('POST /x HTTP/1.0\r\n\r\n')), { kind: 'http', host: undefined });
  });

  it('calls anything else "other", never throws on garbage', () => {
    assert.deepEqual(sniff(Buffer.from('*3\r\n$3\r\nSET\r\n')), { kind: 'other' });
    assert.equal(sniff(Buffer.from([0x16, 3, 1, 0, 4, 9, 9, 9, 9])).kind, 'other');
    for (let i = 0; i < 200; i++) sniff(Buffer.from(Array.from({ length: 64 }, (_, j) => (i * 7 + j * 13) & 0xff)));
  });
});
