/**
 * One HTTP/1 request head (request line and header fields, up to the empty
 * line), read strictly: what a lenient server might read differently from
 * us (bare LF or CR, folded lines, two Host fields) is refused or gives no
 * name, so the policy never decides on a name the server did not see.
 *
 * Its body framing is refused unless every server frames it the same way
 * (RFC 9112 6.1-6.3, and what HAProxy and Envoy reject), because a body
 * one server reads as a body and another as the next request would carry
 * an unchecked request with another Host:
 * - Transfer-Encoding beside Content-Length;
 * - Transfer-Encoding other than exactly one `chunked` (`gzip, chunked` is
 *   valid HTTP, but servers differ on codings they do not know), or any
 *   Transfer-Encoding in an HTTP/1.0 request;
 * - Content-Length that is not plain digits, or several that differ;
 * - a body (Content-Length above 0, or chunked) on GET, HEAD, DELETE, TRACE
 *   or CONNECT: RFC 9110 gives it no meaning, and many servers (Python's
 *   http.server, most small handlers) never read it, so its bytes become
 *   their next request. `Content-Length: 0` is fine.
 */
import { nameOfAuthority } from './names.js';

export type BodyFraming = { kind: 'none' } | { kind: 'length'; length: number } | { kind: 'chunked' };

export interface RequestHead {
  method: string;
  /** The name the request is for; undefined: none, or ambiguous. */
  name: string | undefined;
  framing: BodyFraming;
  /** Upgrade or CONNECT: what follows may not be HTTP any more. */
  switchesProtocol: boolean;
}

/** isRequest: the request line was well-formed (the stream is HTTP, its
 * head refused). */
export type ParsedHead = { ok: true; head: RequestHead } | { ok: false; reason: string; isRequest: boolean };

/** Longest head we wait for. */
export const HEAD_LIMIT = 16 * 1024;

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/1\.([01])$/;
/** Methods whose request body servers disagree on (RFC 9110 9.3). */
const NO_BODY_METHODS = new Set(['GET', 'HEAD', 'DELETE', 'TRACE', 'CONNECT']);
const ABSOLUTE_URI = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/;
const CRLFCRLF = Buffer.from('\r\n\r\n');

/** Offset just past the head's empty line, or -1 while it is not there. */
export function headEnd(buf: Buffer): number {
  const i = buf.indexOf(CRLFCRLF);
  return i < 0 ? -1 : i + 4;
}

/** `bytes`: the head including its final CRLFCRLF. */
export function parseRequestHead(bytes: Buffer): ParsedHead {
  // latin1 maps each byte to one char, so no byte is hidden or merged.
  const text = bytes.toString('latin1');
  if (!text.endsWith('\r\n\r\n')) return { ok: false, reason: 'head not terminated', isRequest: false };
  const lines = text.slice(0, -4).split('\r\n');
  const m = REQUEST_LINE.exec(lines[0] ?? '');
  if (!m) return { ok: false, reason: 'not an HTTP/1 request line', isRequest: false };
  const refuse = (reason: string): ParsedHead => ({ ok: false, reason, isRequest: true });
  if (lines.some((l) => l.includes('\n') || l.includes('\r') || l.includes('\0'))) return refuse('bare CR, LF or NUL in the head');
  const method = m[1] ?? '';
  const target = m[2] ?? '';
  const http10 = m[3] === '0';

  const fields = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    const fieldName = line.slice(0, colon);
    // Also refuses obs-fold (a line starting with a space) and "Host :".
    if (colon <= 0 || !TOKEN.test(fieldName)) return refuse(line.startsWith(' ') || line.startsWith('\t') ? 'obs-fold (a folded header line)' : 'malformed header line');
    const key = fieldName.toLowerCase();
    // Only SP and HTAB are optional whitespace; trim() would also eat
    // \xa0 and \v, which a server keeps as part of the value.
    fields.set(key, [...(fields.get(key) ?? []), line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '')]);
  }

  const framing = bodyFraming(fields, http10);
  if (!framing.ok) return refuse(framing.reason);
  if (framing.framing.kind !== 'none' && NO_BODY_METHODS.has(method)) return refuse(`a body on ${method}`);

  // The absolute-form URI (or CONNECT's authority) names the host as much
  // as the Host field does, and servers disagree on which one wins; when
  // both are there and disagree there is no name.
  let authority: string | undefined;
  if (method === 'CONNECT') authority = target;
  else if (!target.startsWith('/') && target !== '*') {
    const a = ABSOLUTE_URI.exec(target);
    if (!a) return refuse('unknown request target form');
    authority = a[1] ?? '';
  }
  const hosts = fields.get('host') ?? [];
  const fromHost = hosts.length === 1 ? nameOfAuthority(hosts[0] ?? '') : undefined;
  let name: string | undefined;
  if (authority === undefined) name = fromHost;
  else {
    const fromUri = nameOfAuthority(authority);
    name = hosts.length === 0 || fromUri === fromHost ? fromUri : undefined;
  }
  return { ok: true, head: { method, name, framing: framing.framing, switchesProtocol: method === 'CONNECT' || fields.has('upgrade') } };
}

function bodyFraming(fields: Map<string, string[]>, http10: boolean): { ok: true; framing: BodyFraming } | { ok: false; reason: string } {
  const te = fields.get('transfer-encoding');
  const cl = fields.get('content-length');
  // Both at once is the classic request-smuggling shape: refuse it.
  if (te && cl) return { ok: false, reason: 'Transfer-Encoding and Content-Length together' };
  if (te) {
    if (http10) return { ok: false, reason: 'Transfer-Encoding in an HTTP/1.0 request' };
    // Exactly one field, exactly `chunked`: no list, no other coding, no
    // whitespace but the SP/HTAB already trimmed.
    if (te.length !== 1 || te[0]?.toLowerCase() !== 'chunked') return { ok: false, reason: 'Transfer-Encoding other than one chunked' };
    return { ok: true, framing: { kind: 'chunked' } };
  }
  if (cl) {
    if (!cl.every((v) => /^\d{1,15}$/.test(v) && v === cl[0])) return { ok: false, reason: 'bad or conflicting Content-Length' };
    const length = Number(cl[0]);
    return { ok: true, framing: length ? { kind: 'length', length } : { kind: 'none' } };
  }
  return { ok: true, framing: { kind: 'none' } };
}
