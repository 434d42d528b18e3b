/** The request framer refuses every body framing that servers read in
 * different ways (RFC 9112 6-7, what HAProxy and Envoy reject), so that a
 * body can never pass as a second, unchecked request. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { type Framed, RequestFramer } from '../../src/proxy/http-framing.js';

function frame(text: string): Framed[] {
  return new RequestFramer().push(Buffer.from(text, 'latin1'));
}
const errorOf = (items: Framed[]) => items.find((i) => i.kind === 'error');
const names = (items: Framed[]) => items.flatMap((i) => (i.kind === 'request' ? [i.head.name] : []));

const hidden = 'GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n';
const head = (method: string, fields: string[], version = '1.1') => `${method} / HTTP/${version}\r\nHost: a.test\r\n${fields.map((f) => `${f}\r\n`).join('')}\r\n`;
const chunkedBody = (line: string, data = 'hello') => `${line}\r\n${data}\r\n0\r\n\r\n`;

/** Ambiguous framings, each with the reason the framer gives. */
const refused: [string, string, RegExp][] = [
  ['CL and TE', head('POST', [`Content-Length: ${hidden.length}`, 'Transfer-Encoding: chunked']) + '0\r\n\r\n' + hidden, /Content-Length together/],
  ['two differing CL', head('POST', ['Content-Length: 0', `Content-Length: ${hidden.length}`]) + hidden, /conflicting Content-Length/],
  ['CL list', head('POST', [`Content-Length: ${hidden.length}, ${hidden.length}`]) + hidden, /Content-Length/],
  ['CL with a sign', head('POST', [`Content-Length: +${hidden.length}`]) + hidden, /Content-Length/],
  ['TE gzip, chunked', head('POST', ['Transfer-Encoding: gzip, chunked']) + chunkedBody('5'), /other than one chunked/],
  ['TE chunked, identity', head('POST', ['Transfer-Encoding: chunked, identity']) + hidden, /other than one chunked/],
  ['TE in two fields', head('POST', ['Transfer-Encoding: chunked', 'Transfer-Encoding: chunked']) + chunkedBody('5'), /other than one chunked/],
  ['TE with a vertical tab', head('POST', ['Transfer-Encoding: chunked\x0b']) + chunkedBody('5'), /other than one chunked/],
  ['TE xchunked', head('POST', ['Transfer-Encoding: xchunked']) + hidden, /other than one chunked/],
  ['TE on HTTP/1.0', head('POST', ['Transfer-Encoding: chunked'], '1.0') + chunkedBody('5'), /HTTP\/1\.0/],
  ['body on GET', head('GET', [`Content-Length: ${hidden.length}`]) + hidden, /a body on GET/],
  ['chunked body on HEAD', head('HEAD', ['Transfer-Encoding: chunked']) + chunkedBody('5'), /a body on HEAD/],
  ['body on DELETE', head('DELETE', [`Content-Length: ${hidden.length}`]) + hidden, /a body on DELETE/],
  ['body on TRACE', head('TRACE', [`Content-Length: ${hidden.length}`]) + hidden, /a body on TRACE/],
  ['obs-fold', `POST / HTTP/1.1\r\nHost: a.test\r\nX: y\r\n Content-Length: ${hidden.length}\r\n\r\n${hidden}`, /obs-fold/],
  ['bare CR in the head', `POST / HTTP/1.1\r\nHost: a.test\r\nX: y\rContent-Length: ${hidden.length}\r\n\r\n${hidden}`, /bare CR/],
  ['chunk size past 2^64', head('POST', ['Transfer-Encoding: chunked']) + `10000000000000005\r\nhello\r\n0\r\n\r\n${hidden}`, /too large/],
  ['chunk size past 2^63', head('POST', ['Transfer-Encoding: chunked']) + `8000000000000005\r\nhello\r\n0\r\n\r\n`, /too large/],
  ['chunk size past 2^53', head('POST', ['Transfer-Encoding: chunked']) + `20000000000000\r\nhello\r\n0\r\n\r\n`, /too large/],
  ['0x prefix', head('POST', ['Transfer-Encoding: chunked']) + chunkedBody('0x5'), /malformed chunk/],
  ['space after the size', head('POST', ['Transfer-Encoding: chunked']) + chunkedBody('5 '), /malformed chunk/],
  ['a bare ;', head('POST', ['Transfer-Encoding: chunked']) + chunkedBody('5;'), /malformed chunk/],
  ['extension with a space in its value', head('POST', ['Transfer-Encoding: chunked']) + chunkedBody('5;a=b c'), /malformed chunk/],
  ['unterminated quoted value', head('POST', ['Transfer-Encoding: chunked']) + chunkedBody('5;a="b'), /malformed chunk/],
  ['bare CR in a chunk line', head('POST', ['Transfer-Encoding: chunked']) + chunkedBody('5;a\rb'), /bare CR/],
  ['bare LF after a chunk size', head('POST', ['Transfer-Encoding: chunked']) + `5\nhello\r\n0\r\n\r\n${hidden}`, /./],
  ['chunk data not followed by CRLF', head('POST', ['Transfer-Encoding: chunked']) + `5\r\nhelloXX0\r\n\r\n`, /CRLF/],
  ['obs-fold in a trailer', head('POST', ['Transfer-Encoding: chunked']) + `0\r\nT: 1\r\n 2\r\n\r\n`, /trailer/],
];

describe('request framing', () => {
  for (const [what, text, reason] of refused) {
    it(`refuses ${what}, and frames no request after it`, () => {
      const items = frame(text + hidden);
      const e = errorOf(items);
      assert.ok(e && e.kind === 'error', `${what}: ${JSON.stringify(names(items))}`);
      assert.match(e.reason, reason);
      assert.ok(!names(items).includes('blocked.test'), what);
    });
  }

  it('follows what every server frames alike: one chunked, CL 0 on GET, well-formed chunk extensions, leading zeros', () => {
    for (const ok of [
      head('GET', ['Content-Length: 0']),
      head('DELETE', []),
      head('POST', ['Transfer-Encoding: Chunked']) + chunkedBody('5'),
      head('POST', ['Transfer-Encoding: chunked']) + chunkedBody('5;a'),
      head('POST', ['Transfer-Encoding: chunked']) + chunkedBody('5 ; a = b ;c="q \\" ;d"'),
      head('POST', ['Transfer-Encoding: chunked']) + chunkedBody('00000000000000000005'),
      head('POST', ['Content-Length: 5', 'Content-Length: 5']) + 'hello',
      head('OPTIONS', ['Content-Length: 5']) + 'hello',
      head('POST', ['Content-Length: 5'], '1.0') + 'hello',
    ]) {
      const items = frame(ok + hidden);
      assert.equal(errorOf(items), undefined, JSON.stringify(ok));
      assert.deepEqual(names(items), ['a.test', 'blocked.test'], JSON.stringify(ok));
    }
  });

  it('never lets a body pass as a request: any framing header lines, any body, either a refusal or the bytes framed as the client declared', () => {
    const framingLine = fc.oneof(
      fc.constantFrom('Content-Length', 'Transfer-Encoding', 'content-length', 'TRANSFER-ENCODING').chain((n) =>
        fc.oneof(
          fc.constantFrom('chunked', 'gzip, chunked', 'chunked, gzip', ' chunked', 'identity', '0', '5', '05', '-1', '1,1', 'chunked\x0b').map((v) => `${n}: ${v}`),
          fc.nat({ max: 200 }).map((v) => `${n}: ${v}`),
        ),
      ),
      fc.constantFrom(' Transfer-Encoding: chunked', 'X: y', 'Content-Length : 5'),
    );
    fc.assert(
      fc.property(
        fc.constantFrom('GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'TRACE'),
        fc.constantFrom('1.0', '1.1'),
        fc.array(framingLine, { maxLength: 3 }),
        fc.string({ unit: 'binary-ascii', maxLength: 60 }),
        (method, version, lines, body) => {
          const items = frame(head(method, lines, version) + body + hidden);
          const e = errorOf(items);
          if (e) return;
          // Accepted: then the head's framing is the one and only reading,
          // and the hidden request comes out only where the declared body
          // really ended before it.
          const first = items.find((i) => i.kind === 'request');
          assert.ok(first && first.kind === 'request');
          const framing = first.head.framing;
          if (framing.kind !== 'none') assert.ok(['POST', 'PUT', 'OPTIONS'].includes(method), `${method} with a body accepted`);
          const te = lines.filter((l) => /^transfer-encoding:/i.test(l));
          const cl = lines.filter((l) => /^content-length:/i.test(l));
          assert.ok(!(te.length && cl.length), 'TE and CL both accepted');
          if (te.length) assert.deepEqual([te.length, te[0]?.toLowerCase(), version], [1, 'transfer-encoding: chunked', '1.1']);
        },
      ),
      { numRuns: 2000 },
    );
  });
});
