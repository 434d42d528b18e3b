/**
 * One HTTP/1 request head (request line and header fields, up to the empty
 * line), read strictly: what a lenient server might read differently from
 * us (bare LF, folded lines, Content-Length beside Transfer-Encoding, two
 * Host fields) is refused or gives no name, so the policy never decides on
 * a name the server did not see.
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

export type ParsedHead = { ok: true; head: RequestHead } | { ok: false; reason: string };

/** Longest head we wait for. */
export const HEAD_LIMIT = 16 * 1024;

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const REQUEST_LINE = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP\/1\.[01]$/;
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
  if (!text.endsWith('\r\n\r\n')) return { ok: false, reason: 'head not terminated' };
  const lines = text.slice(0, -4).split('\r\n');
  if (lines.some((l) => l.includes('\n') || l.includes('\r') || l.includes('\0'))) return { ok: false, reason: 'bare CR, LF or NUL in the head' };
  const m = REQUEST_LINE.exec(lines[0] ?? '');
  if (!m) return { ok: false, reason: 'not an HTTP/1 request line' };
  const method = m[1] ?? '';
  const target = m[2] ?? '';

  const fields = new Map<string, string[]>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    const fieldName = line.slice(0, colon);
    // Also refuses obs-fold (a line starting with a space) and "Host :".
    if (colon <= 0 || !TOKEN.test(fieldName)) return { ok: false, reason: `malformed header line` };
    const key = fieldName.toLowerCase();
    // Only SP and HTAB are optional whitespace; trim() would also eat
    // \xa0 and \v, which a server keeps as part of the value.
    fields.set(key, [...(fields.get(key) ?? []), line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '')]);
  }

  const framing = bodyFraming(fields);
  if (!framing.ok) return framing;

  // The absolute-form URI (or CONNECT's authority) names the host as much
  // as the Host field does, and servers disagree on which one wins; when
  // both are there and disagree there is no name.
  let authority: string | undefined;
  if (method === 'CONNECT') authority = target;
  else if (!target.startsWith('/') && target !== '*') {
    const a = ABSOLUTE_URI.exec(target);
    if (!a) return { ok: false, reason: 'unknown request target form' };
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

function bodyFraming(fields: Map<string, string[]>): { ok: true; framing: BodyFraming } | { ok: false; reason: string } {
  const te = fields.get('transfer-encoding');
  const cl = fields.get('content-length');
  // Both at once is the classic request-smuggling shape: refuse it.
  if (te && cl) return { ok: false, reason: 'Transfer-Encoding and Content-Length together' };
  if (te) {
    const codings = te
      .join(',')
      .split(',')
      .map((c) => c.trim().toLowerCase());
    if (codings.at(-1) !== 'chunked' || codings.indexOf('chunked') !== codings.length - 1) return { ok: false, reason: 'Transfer-Encoding not ending in one chunked' };
    return { ok: true, framing: { kind: 'chunked' } };
  }
  if (cl) {
    if (!cl.every((v) => /^\d{1,15}$/.test(v) && v === cl[0])) return { ok: false, reason: 'bad or conflicting Content-Length' };
    const length = Number(cl[0]);
    return { ok: true, framing: length ? { kind: 'length', length } : { kind: 'none' } };
  }
  return { ok: true, framing: { kind: 'none' } };
}
