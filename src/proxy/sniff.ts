/**
 * What the first bytes of a client's stream say about where it wants to go:
 * the server name of a TLS ClientHello (SNI), or the Host header of an
 * HTTP/1 request. Parsers never throw: malformed input is "other".
 */

export type Sniffed =
  | { kind: 'incomplete' }
  | { kind: 'tls'; sni: string | undefined }
  | { kind: 'http'; host: string | undefined }
  | { kind: 'other' };

/** Stop looking after this many bytes. */
export const SNIFF_LIMIT = 16 * 1024;

const HTTP_METHOD = /^[A-Z]{3,10} /;

export function sniff(buf: Buffer): Sniffed {
  if (buf.length === 0) return { kind: 'incomplete' };
  if (buf[0] === 0x16) return sniffTls(buf);
  const head = buf.subarray(0, 11).toString('latin1');
  if (HTTP_METHOD.test(head) || (buf.length < 11 && /^[A-Z]+$/.test(head))) return sniffHttp(buf);
  return { kind: 'other' };
}

function sniffHttp(buf: Buffer): Sniffed {
  const text = buf.subarray(0, SNIFF_LIMIT).toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  if (end < 0) return buf.length >= SNIFF_LIMIT ? { kind: 'http', host: undefined } : { kind: 'incomplete' };
  const lines = text.slice(0, end).split('\r\n');
  if (!/^[A-Z]{3,10} \S+ HTTP\/1\.[01]$/.test(lines[0] ?? '')) return { kind: 'other' };
  for (const line of lines.slice(1)) {
    const m = /^host:[ \t]*(.*?)[ \t]*$/i.exec(line);
    if (m) return { kind: 'http', host: stripPort(m[1] ?? '') || undefined };
  }
  return { kind: 'http', host: undefined };
}

function stripPort(host: string): string {
  if (host.startsWith('[')) return host.slice(1, host.indexOf(']') > 0 ? host.indexOf(']') : undefined);
  const i = host.lastIndexOf(':');
  return i >= 0 ? host.slice(0, i) : host;
}

/**
 * TLS record (type 22, handshake) holding a ClientHello (type 1):
 *   record: type(1) version(2) length(2)
 *   handshake: type(1) length(3) client_version(2) random(32)
 *     session_id<1> cipher_suites<2> compression<1> extensions<2>
 *   extension server_name (0): list<2> { name_type(1)=0 name<2> }
 */
function sniffTls(buf: Buffer): Sniffed {
  if (buf.length < 5) return { kind: 'incomplete' };
  const recordLen = buf.readUInt16BE(3);
  if (buf[1] !== 3 || recordLen < 4) return { kind: 'other' };
  if (buf.length < 5 + recordLen) return buf.length >= SNIFF_LIMIT ? { kind: 'tls', sni: undefined } : { kind: 'incomplete' };
  const hs = buf.subarray(5, 5 + recordLen);
  if (hs[0] !== 1) return { kind: 'other' };
  let p = 4 + 2 + 32;
  const need = (n: number) => p + n <= hs.length;
  if (!need(1)) return { kind: 'tls', sni: undefined };
  p += 1 + (hs[p] ?? 0);
  if (!need(2)) return { kind: 'tls', sni: undefined };
  p += 2 + hs.readUInt16BE(p);
  if (!need(1)) return { kind: 'tls', sni: undefined };
  p += 1 + (hs[p] ?? 0);
  if (!need(2)) return { kind: 'tls', sni: undefined };
  const extEnd = Math.min(hs.length, p + 2 + hs.readUInt16BE(p));
  p += 2;
  while (p + 4 <= extEnd) {
    const type = hs.readUInt16BE(p);
    const len = hs.readUInt16BE(p + 2);
    p += 4;
    if (p + len > extEnd) break;
    if (type === 0 && len >= 5 && hs[p + 2] === 0) {
      const nameLen = hs.readUInt16BE(p + 3);
      if (p + 5 + nameLen <= p + len) return { kind: 'tls', sni: hs.subarray(p + 5, p + 5 + nameLen).toString('ascii') };
    }
    p += len;
  }
  return { kind: 'tls', sni: undefined };
}
