/** Property-based tests of the sniffers and the request framer: whatever
 * the bytes and however they are split, they never throw, and a name comes
 * out only if it is the one that went in. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { RequestFramer } from '../../src/proxy/http-framing.js';
import { type Sniffed, SNIFF_LIMIT, sniff } from '../../src/proxy/sniff.js';
import { ENCRYPTED_NAME_EXTENSIONS } from '../../src/proxy/tls-hello.js';
import { clientHelloMessage, inRecords } from '../helpers/tls-hello.js';

const RUNS = { numRuns: 300 };

/** A DNS name in random letter case, and the name the policy should see. */
const hostName = fc.tuple(fc.domain(), fc.array(fc.boolean(), { minLength: 1 })).map(([name, upper]) => ({
  sent: [...name].map((c, i) => (upper[i % upper.length] ? c.toUpperCase() : c)).join(''),
  expected: name.toLowerCase(),
}));
/** Extensions other than server_name (and ECH/ESNI, which hide it), to
 * move it around in the hello. */
const otherExtensions = fc.array(
  fc.tuple(
    fc.integer({ min: 1, max: 0xffff }).filter((t) => !ENCRYPTED_NAME_EXTENSIONS.includes(t)),
    fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
  ),
  { maxLength: 4 },
);
/** Cut points, as fractions of whatever length they are applied to. */
const cuts = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 12 });
const at = (fractions: number[], length: number) => fractions.map((f) => Math.floor(f * length));

/** Every prefix the proxy could see while the bytes arrive in these chunks. */
function prefixes(bytes: Buffer, chunkCuts: number[]): Buffer[] {
  const points = [...new Set([...chunkCuts, bytes.length])].filter((p) => p > 0 && p <= bytes.length).sort((a, b) => a - b);
  return points.map((p) => bytes.subarray(0, p));
}

/** Only the right name or no name: never a wrong one. */
function nameIsRightOrMissing(s: Sniffed, expected: string): boolean {
  if (s.kind === 'tls') return s.sni === undefined || s.sni === expected;
  if (s.kind === 'http') return s.host === undefined || s.host === expected;
  return true;
}

describe('sniffer properties', () => {
  it('never throws on random input, nor on random input after a TLS or HTTP start', () => {
    const starts = fc.constantFrom(
      Buffer.alloc(0),
      Buffer.from([0x16, 3, 1]),
      Buffer.from([0x16, 3, 3, 0, 0x40, 1]),
      Buffer.from('GET / HTTP/1.1\r\nHost: '),
      Buffer.from('POST http://'),
    );
    fc.assert(
      fc.property(starts, fc.uint8Array({ maxLength: 2048 }), (start, rest) => {
        sniff(Buffer.concat([start, rest]));
      }),
      { numRuns: 1000 },
    );
  });

  it('reads a generated ClientHello in any number of records, arriving in any chunks, as its name or not yet', () => {
    fc.assert(
      fc.property(hostName, otherExtensions, otherExtensions, cuts, cuts, ({ sent, expected }, before, after, recordCuts, chunkCuts) => {
        const message = clientHelloMessage(Buffer.from(sent), before, after);
        const stream = inRecords(message, at(recordCuts, message.length));
        const seen = prefixes(stream, at(chunkCuts, stream.length)).map(sniff);
        for (const s of seen.slice(0, -1)) assert.ok(s.kind === 'incomplete' || nameIsRightOrMissing(s, expected), JSON.stringify(s));
        const last = seen.at(-1);
        if (stream.length <= SNIFF_LIMIT) assert.deepEqual(last, { kind: 'tls', sni: expected });
        else assert.deepEqual(last, { kind: 'tls', sni: undefined });
      }),
      RUNS,
    );
  });

  it('gives no name for a ClientHello with ECH or ESNI anywhere among its extensions, in any records', () => {
    const encrypted = fc.tuple(
      fc.constantFrom(...ENCRYPTED_NAME_EXTENSIONS),
      fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
    );
    fc.assert(
      fc.property(hostName, otherExtensions, otherExtensions, encrypted, fc.boolean(), fc.nat(), cuts, ({ sent }, before, after, ech, first, where, recordCuts) => {
        const side = first ? before : after;
        const i = where % (side.length + 1);
        const withEch = [...side.slice(0, i), ech, ...side.slice(i)];
        const message = clientHelloMessage(Buffer.from(sent), first ? withEch : before, first ? after : withEch);
        assert.deepEqual(sniff(inRecords(message, at(recordCuts, message.length))), { kind: 'tls', sni: undefined });
      }),
      RUNS,
    );
  });

  it('never reads a ClientHello with a damaged name, or truncated, as another name', () => {
    fc.assert(
      fc.property(hostName, fc.nat(), fc.integer({ min: 0x80, max: 0xff }), cuts, fc.nat(), ({ sent, expected }, where, byte, recordCuts, cut) => {
        const name = Buffer.from(sent);
        name[where % name.length] = byte;
        const message = clientHelloMessage(name);
        const stream = inRecords(message, at(recordCuts, message.length));
        assert.deepEqual(sniff(stream), { kind: 'tls', sni: undefined });
        const good = inRecords(clientHelloMessage(Buffer.from(sent)), at(recordCuts, message.length));
        assert.ok(nameIsRightOrMissing(sniff(good.subarray(0, cut % (good.length + 1))), expected));
      }),
      RUNS,
    );
  });

  const fieldName = fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,15}$/).filter((n) => !['host', 'content-length', 'transfer-encoding', 'upgrade'].includes(n.toLowerCase()));
  const fieldValue = fc.stringMatching(/^[!-~]{0,30}$/);
  const request = fc.record({
    host: hostName,
    port: fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }),
    absolute: fc.boolean(),
    fields: fc.array(fc.tuple(fieldName, fieldValue), { maxLength: 5 }),
    hostAt: fc.nat(),
    body: fc.option(
      fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
      { nil: undefined },
    ),
    chunked: fc.boolean(),
  });
  type Req = typeof request extends fc.Arbitrary<infer T> ? T : never;
  function bytesOf(r: Req): Buffer {
    const authority = `${r.host.sent}${r.port ? `:${r.port}` : ''}`;
    const fields = r.fields.map(([n, v]) => `${n}: ${v}`);
    fields.splice(r.hostAt % (fields.length + 1), 0, `Host: ${authority}`);
    let body = Buffer.alloc(0);
    if (r.body && r.chunked) {
      fields.push('Transfer-Encoding: chunked');
      body = Buffer.concat([Buffer.from(r.body.length ? `${r.body.length.toString(16)}\r\n` : ''), r.body, Buffer.from(r.body.length ? '\r\n0\r\n\r\n' : '0\r\n\r\n')]);
    } else if (r.body) {
      fields.push(`Content-Length: ${r.body.length}`);
      body = r.body;
    }
    const target = r.absolute ? `http://${authority}/p` : '/p';
    return Buffer.concat([Buffer.from(`${r.body ? 'POST' : 'GET'} ${target} HTTP/1.1\r\n${fields.join('\r\n')}\r\n\r\n`, 'latin1'), body]);
  }

  it('reads a generated HTTP request, arriving in any chunks, as its Host or not yet', () => {
    fc.assert(
      fc.property(request, cuts, (r, chunkCuts) => {
        const bytes = bytesOf(r);
        const seen = prefixes(bytes, at(chunkCuts, bytes.length)).map(sniff);
        for (const s of seen) assert.ok(s.kind === 'incomplete' || (s.kind === 'http' && s.host === r.host.expected), JSON.stringify(s));
        assert.deepEqual(seen.at(-1), { kind: 'http', host: r.host.expected });
      }),
      RUNS,
    );
  });

  it('frames keep-alive requests in any chunks: the names come out in order, the bytes unchanged', () => {
    fc.assert(
      fc.property(fc.array(request, { minLength: 1, maxLength: 5 }), cuts, (requests, chunkCuts) => {
        const stream = Buffer.concat(requests.map(bytesOf));
        const framer = new RequestFramer();
        const names: (string | undefined)[] = [];
        const out: Buffer[] = [];
        let from = 0;
        for (const p of [...prefixes(stream, at(chunkCuts, stream.length)).map((b) => b.length)]) {
          for (const item of framer.push(stream.subarray(from, p))) {
            assert.notEqual(item.kind, 'error', JSON.stringify(item));
            if (item.kind === 'request') names.push(item.head.name);
            if (item.kind !== 'error') out.push(item.bytes);
          }
          from = p;
        }
        assert.deepEqual(
          names,
          requests.map((r) => r.host.expected),
        );
        assert.ok(Buffer.concat(out).equals(stream));
        assert.ok(framer.atRequestBoundary);
      }),
      RUNS,
    );
  });

  it('never throws framing random bytes, and never frames a request out of random bytes after an error', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 512 }), { maxLength: 8 }), (chunks) => {
        const framer = new RequestFramer();
        let failed = false;
        for (const c of chunks) {
          for (const item of framer.push(Buffer.from(c))) {
            assert.ok(!failed);
            failed ||= item.kind === 'error';
          }
        }
      }),
      { numRuns: 1000 },
    );
  });
});
