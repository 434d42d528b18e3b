import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SNIFF_LIMIT, sniff } from '../../src/proxy/sniff.js';
import { clientHelloMessage, handshakeOf, inRecords, realClientHello } from '../helpers/tls-hello.js';

const http = (s: string) => sniff(Buffer.from(s, 'latin1'));

describe('first-bytes sniffing', () => {
  it('reads the SNI from a real ClientHello, and waits for the rest of a partial one', async () => {
    const hello = await realClientHello('svc.example.com');
    assert.deepEqual(sniff(hello), { kind: 'tls', sni: 'svc.example.com' });
    assert.deepEqual(sniff(hello.subarray(0, 40)), { kind: 'incomplete' });
  });

  it('reassembles a ClientHello split into several TLS records', async () => {
    const message = handshakeOf(await realClientHello('blocked.test'));
    // The split that let `deny sni blocked.test` through: 50 bytes, then the rest.
    assert.deepEqual(sniff(inRecords(message, [50])), { kind: 'tls', sni: 'blocked.test' });
    assert.deepEqual(sniff(inRecords(message, [1, 2, 3, 4, 5, 100, 101])), { kind: 'tls', sni: 'blocked.test' });
    const oneByteRecords = inRecords(
      message,
      Array.from({ length: message.length }, (_, i) => i),
    );
    assert.deepEqual(sniff(oneByteRecords), message.length * 6 <= SNIFF_LIMIT ? { kind: 'tls', sni: 'blocked.test' } : { kind: 'tls', sni: undefined });
    assert.deepEqual(sniff(inRecords(message, [50]).subarray(0, 60)), { kind: 'incomplete' });
  });

  it('gives no name for a ClientHello larger than the reassembly bound', () => {
    const padding: [number, Buffer][] = [[21, Buffer.alloc(SNIFF_LIMIT)]];
    const big = clientHelloMessage(Buffer.from('blocked.test'), padding);
    assert.deepEqual(sniff(inRecords(big, [10_000])), { kind: 'tls', sni: undefined });
    assert.deepEqual(sniff(inRecords(big, [10_000]).subarray(0, 100)), { kind: 'tls', sni: undefined }, 'known from its declared length');
  });

  it('gives no name for a ClientHello with ECH or ESNI: its server_name is the outer one, not the destination', () => {
    for (const ext of [0xfe0d, 0xffce]) {
      for (const where of ['before', 'after'] as const) {
        const other: [number, Buffer][] = [[ext, Buffer.from([0, 1, 2, 3])]];
        const m = where === 'before' ? clientHelloMessage(Buffer.from('public.ok.test'), other) : clientHelloMessage(Buffer.from('public.ok.test'), [], other);
        assert.deepEqual(sniff(inRecords(m)), { kind: 'tls', sni: undefined }, `0x${ext.toString(16)} ${where} server_name`);
      }
    }
    // A GREASE-like neighbour (0xfe0c, 0xffcd) does not hide the name.
    assert.deepEqual(sniff(inRecords(clientHelloMessage(Buffer.from('public.ok.test'), [[0xfe0c, Buffer.alloc(2)]], [[0xffcd, Buffer.alloc(2)]]))), {
      kind: 'tls',
      sni: 'public.ok.test',
    });
  });

  it('never reads a non-ASCII server name or Host as an ASCII one', () => {
    const tricky = Buffer.from('\xe9nternal.test', 'latin1');
    assert.deepEqual(sniff(inRecords(clientHelloMessage(tricky))), { kind: 'tls', sni: undefined });
    assert.deepEqual(http('GET / HTTP/1.1\r\nHost: \xe9nternal.test\r\n\r\n'), { kind: 'http', host: undefined });
    assert.deepEqual(http('GET / HTTP/1.1\r\nHost: internal.test\xa0\r\n\r\n'), { kind: 'http', host: undefined });
    assert.deepEqual(sniff(inRecords(clientHelloMessage(Buffer.from('Internal.Test.')))), { kind: 'tls', sni: 'internal.test' });
  });

  it('reads the Host of an HTTP/1 request, without its port', () => {
    assert.deepEqual(http('GET / HTTP/1.1\r\nHost: api.test:8080\r\nAccept: */*\r\n\r\n'), { kind: 'http', host: 'api.test' });
    assert.deepEqual(http('GET / HTTP/1.1\r\nHost: [fd00::2]:80\r\n\r\n'), { kind: 'http', host: 'fd00::2' });
    assert.deepEqual(http('GET / HTTP/1.1\r\nHo'), { kind: 'incomplete' });
    assert.deepEqual(http('POST /x HTTP/1.0\r\n\r\n'), { kind: 'http', host: undefined });
  });

  it("counts an absolute-form URI's authority as the Host; no name when they disagree", () => {
    assert.deepEqual(http('GET http://blocked.test/ HTTP/1.1\r\nHost: harmless.test\r\n\r\n'), { kind: 'http', host: undefined });
    assert.deepEqual(http('GET http://blocked.test:80/x?y HTTP/1.1\r\nHost: blocked.test\r\n\r\n'), { kind: 'http', host: 'blocked.test' });
    assert.deepEqual(http('GET http://blocked.test/ HTTP/1.1\r\n\r\n'), { kind: 'http', host: 'blocked.test' });
    assert.deepEqual(http('GET http://user@blocked.test/ HTTP/1.1\r\nHost: blocked.test\r\n\r\n'), { kind: 'http', host: undefined });
    assert.deepEqual(http('CONNECT blocked.test:443 HTTP/1.1\r\nHost: blocked.test:443\r\n\r\n'), { kind: 'http', host: 'blocked.test' });
  });

  it('gives no name where a server might read another one', () => {
    assert.deepEqual(http('GET / HTTP/1.1\r\nHost: a.test\r\nHost: blocked.test\r\n\r\n'), { kind: 'http', host: undefined }, 'two Host fields');
    // Refused heads are still HTTP, so a Host policy inspects (and refuses) them.
    assert.deepEqual(http('GET / HTTP/1.1\r\nX: y\r\n Host: blocked.test\r\n\r\n'), { kind: 'http', host: undefined }, 'folded line');
    assert.deepEqual(http('GET / HTTP/1.1\r\nHost : blocked.test\r\n\r\n'), { kind: 'http', host: undefined }, 'space before the colon');
    assert.deepEqual(http('GET / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n'), { kind: 'http', host: undefined }, 'CL and TE');
    assert.equal(http('GET / HTTP/1.1\nHost: a.test\r\n\r\n').kind, 'other', 'bare LF');
  });

  it('calls anything else "other", never throws on garbage', () => {
    assert.deepEqual(sniff(Buffer.from('*3\r\n$3\r\nSET\r\n')), { kind: 'other' });
    assert.equal(sniff(Buffer.from([0x16, 3, 1, 0, 4, 9, 9, 9, 9])).kind, 'other');
    for (let i = 0; i < 200; i++) sniff(Buffer.from(Array.from({ length: 64 }, (_, j) => (i * 7 + j * 13) & 0xff)));
  });
});
