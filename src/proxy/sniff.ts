/**
 * What the first bytes of a client's stream say about where it wants to go:
 * the server name of a TLS ClientHello (SNI), or the name of an HTTP/1
 * request (Host, or its absolute-form URI). Parsers never throw. A name is
 * only ever one the server would read too: when in doubt it is undefined
 * (the policy's "unknown"), never a guess.
 */
import { HEAD_LIMIT, headEnd, parseRequestHead } from './http-head.js';
import { SNIFF_LIMIT, sniffClientHello } from './tls-hello.js';

export { SNIFF_LIMIT };

export type Sniffed = { kind: 'incomplete' } | { kind: 'tls'; sni: string | undefined } | { kind: 'http'; host: string | undefined } | { kind: 'other' };

const HTTP_METHOD = /^[A-Z]{3,10} /;

export function sniff(buf: Buffer): Sniffed {
  if (buf.length === 0) return { kind: 'incomplete' };
  if (buf[0] === 0x16) return sniffClientHello(buf);
  const head = buf.subarray(0, 11).toString('latin1');
  if (HTTP_METHOD.test(head) || (buf.length < 11 && /^[A-Z]+$/.test(head))) return sniffHttp(buf);
  return { kind: 'other' };
}

function sniffHttp(buf: Buffer): Sniffed {
  const end = headEnd(buf.subarray(0, HEAD_LIMIT));
  if (end < 0) return buf.length >= HEAD_LIMIT ? { kind: 'http', host: undefined } : { kind: 'incomplete' };
  const parsed = parseRequestHead(buf.subarray(0, end));
  if (parsed.ok) return { kind: 'http', host: parsed.head.name };
  // A request whose head is refused is still HTTP (without a name): a
  // connection decided by Host is then inspected, and the inspection
  // refuses that head, instead of relaying it unchecked as "other".
  return parsed.isRequest ? { kind: 'http', host: undefined } : { kind: 'other' };
}
