/**
 * The server name of a TLS ClientHello, reassembled from as many handshake
 * records as the client split it into (RFC 8446 5.1 allows any split, and
 * a client that wants to slip past a filter splits on purpose), up to
 * SNIFF_LIMIT bytes of records; a ClientHello that does not fit is TLS
 * without a name.
 *
 *   record: type(1)=22 version(2) length(2) fragment
 *   handshake: type(1)=1 length(3) client_version(2) random(32)
 *     session_id<1> cipher_suites<2> compression<1> extensions<2>
 *   extension server_name (0): list<2> { name_type(1)=0 name<2> }
 *
 * A hello that carries encrypted_client_hello (ECH, 0xfe0d) or the draft
 * encrypted_server_name (ESNI, 0xffce) has no name either: its server_name
 * is the outer, public one (a client-facing server's), not the name of
 * the server the client wants, which is encrypted.
 */
import { nameOfSni } from './names.js';

export type HelloSniffed = { kind: 'incomplete' } | { kind: 'tls'; sni: string | undefined } | { kind: 'other' };

/** Most bytes of records read for one ClientHello. */
export const SNIFF_LIMIT = 16 * 1024;

const RECORD_HEADER = 5;
const HANDSHAKE = 22;
const CLIENT_HELLO = 1;
const NO_NAME: HelloSniffed = { kind: 'tls', sni: undefined };
const SERVER_NAME = 0;
/** Extensions whose presence means the real name is encrypted. */
export const ENCRYPTED_NAME_EXTENSIONS: readonly number[] = [0xfe0d /* ECH */, 0xffce /* ESNI draft */];

export function sniffClientHello(buf: Buffer): HelloSniffed {
  const fragments: Buffer[] = [];
  let collected = 0;
  let p = 0;
  for (;;) {
    if (p + RECORD_HEADER > SNIFF_LIMIT) return NO_NAME;
    if (buf.length < p + RECORD_HEADER) return buf.length > p && buf[p] !== HANDSHAKE ? notHello(p) : { kind: 'incomplete' };
    const length = buf.readUInt16BE(p + 3);
    if (buf[p] !== HANDSHAKE || buf[p + 1] !== 3) return notHello(p);
    // Empty handshake fragments are forbidden; a record is at most 2^14.
    if (length === 0 || length > 16384) return p === 0 ? { kind: 'other' } : NO_NAME;
    if (p + RECORD_HEADER + length > SNIFF_LIMIT) return NO_NAME;
    const complete = buf.length >= p + RECORD_HEADER + length;
    fragments.push(buf.subarray(p + RECORD_HEADER, p + RECORD_HEADER + length));
    collected += fragments.at(-1)!.length;
    p += RECORD_HEADER + length;
    if (fragments[0]?.[0] !== CLIENT_HELLO) return { kind: 'other' };
    if (collected >= 4) {
      // Joined only to read the length and once complete: a hello in
      // thousands of one-byte records must not cost a copy per record.
      const helloLength = Buffer.concat(fragments, 4).readUIntBE(1, 3);
      // Known too big before it is all there: no need to wait for it.
      if (4 + helloLength > SNIFF_LIMIT) return NO_NAME;
      if (complete && collected >= 4 + helloLength) return { kind: 'tls', sni: serverName(Buffer.concat(fragments, collected).subarray(4, 4 + helloLength)) };
    }
    if (!complete) return { kind: 'incomplete' };
  }
}

/** A record that is not a handshake: not TLS at all if it is the first,
 * a ClientHello we cannot read if it interrupts one. */
function notHello(p: number): HelloSniffed {
  return p === 0 ? { kind: 'other' } : NO_NAME;
}

/** The one host_name of the ClientHello body; undefined when there is none,
 * more than one, an encrypted one beside it, or the body is malformed. */
function serverName(body: Buffer): string | undefined {
  let p = 2 + 32;
  const skip = (lengthBytes: 1 | 2): boolean => {
    if (p + lengthBytes > body.length) return false;
    p += lengthBytes + body.readUIntBE(p, lengthBytes);
    return p <= body.length;
  };
  if (!skip(1) || !skip(2) || !skip(1)) return undefined;
  if (p + 2 > body.length) return undefined;
  const extEnd = p + 2 + body.readUInt16BE(p);
  // Bytes after the extensions (or extensions running past the body) are
  // a malformed hello, which a server refuses: no name to trust.
  if (extEnd !== body.length) return undefined;
  p += 2;
  let name: string | undefined;
  let seen = false;
  while (p < extEnd) {
    if (p + 4 > extEnd) return undefined;
    const type = body.readUInt16BE(p);
    const len = body.readUInt16BE(p + 2);
    p += 4;
    if (p + len > extEnd) return undefined;
    if (ENCRYPTED_NAME_EXTENSIONS.includes(type)) return undefined;
    if (type === SERVER_NAME) {
      if (seen) return undefined;
      seen = true;
      const names = hostNames(body.subarray(p, p + len));
      if (names === undefined || names.length !== 1) return undefined;
      name = nameOfSni(names[0]!);
    }
    p += len;
  }
  return name;
}

function hostNames(ext: Buffer): Buffer[] | undefined {
  if (ext.length < 2 || ext.readUInt16BE(0) !== ext.length - 2) return undefined;
  const names: Buffer[] = [];
  let p = 2;
  while (p < ext.length) {
    if (p + 3 > ext.length) return undefined;
    const type = ext[p];
    const len = ext.readUInt16BE(p + 1);
    p += 3;
    if (p + len > ext.length) return undefined;
    if (type === 0) names.push(ext.subarray(p, p + len));
    p += len;
  }
  return names;
}
