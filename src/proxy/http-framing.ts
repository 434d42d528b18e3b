/**
 * Cuts a client's HTTP/1 byte stream into requests, so that the proxy can
 * check each request of a keep-alive connection before it goes upstream.
 * Bodies are followed by Content-Length or chunked coding. Anything the
 * framer cannot follow exactly as a server would (a malformed head or chunk,
 * an Upgrade or CONNECT, after which the stream is no longer HTTP) ends the
 * stream with an error: the proxy then closes the connection rather than
 * pass on bytes it cannot check.
 */
import { HEAD_LIMIT, type RequestHead, headEnd, parseRequestHead } from './http-head.js';

export type Framed =
  /** A complete request head, not yet forwarded: check it first. */
  | { kind: 'request'; head: RequestHead; bytes: Buffer }
  /** Body bytes of the request before. */
  | { kind: 'body'; bytes: Buffer }
  /** inHead: in the head of a new request, not in the body of the last. */
  | { kind: 'error'; reason: string; inHead: boolean };

type State =
  { at: 'head' } | { at: 'body'; left: number } | { at: 'chunk-size' } | { at: 'chunk-data'; left: number } | { at: 'chunk-end' } | { at: 'trailers' } | { at: 'failed' };

const CRLF = Buffer.from('\r\n');
/** Longest chunk-size line (with extensions) or trailer line we wait for. */
const LINE_LIMIT = 4096;
/** chunk-size [ chunk-ext ] (RFC 9112 7.1.1): hex digits, then only
 * `;name` or `;name=value` (a token or a quoted string), whitespace only
 * around `;` and `=`. Servers differ on anything else (a bare `;`, a
 * space before the line ends, a control byte), so it is refused. */
const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const QUOTED = '"(?:[\\t !#-\\[\\]-~]|\\\\[\\t -~])*"';
const CHUNK_EXT = `(?:[ \\t]*;[ \\t]*${TOKEN}(?:[ \\t]*=[ \\t]*(?:${TOKEN}|${QUOTED}))?)*`;
const CHUNK_LINE = new RegExp(`^([0-9A-Fa-f]+)${CHUNK_EXT}$`);
/** Largest chunk size followed (2^53 - 1: exact in a number). Bigger ones,
 * which a server might read modulo 2^64 or refuse, are refused. */
const MAX_CHUNK = BigInt(Number.MAX_SAFE_INTEGER);

export class RequestFramer {
  private pending: Buffer = Buffer.alloc(0);
  private state: State = { at: 'head' };

  /** The items `chunk` completes, in stream order; after an error, none. */
  push(chunk: Buffer): Framed[] {
    if (this.state.at === 'failed') return [];
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const out: Framed[] = [];
    while (this.pending.length && this.state.at !== 'failed') {
      const item = this.step();
      if (!item) break;
      out.push(item);
      if (item.kind === 'error') this.state = { at: 'failed' };
    }
    return out;
  }

  /** Whether the stream ended between requests (nothing half-sent). */
  get atRequestBoundary(): boolean {
    return this.state.at === 'head' && this.pending.length === 0;
  }

  /** One item from the front of `pending`, or null until more bytes come. */
  private step(): Framed | null {
    const s = this.state;
    switch (s.at) {
      case 'head': {
        const end = headEnd(this.pending.subarray(0, HEAD_LIMIT));
        if (end < 0) return this.pending.length >= HEAD_LIMIT ? { kind: 'error', reason: `request head over ${HEAD_LIMIT} bytes`, inHead: true } : null;
        const bytes = this.take(end);
        const parsed = parseRequestHead(bytes);
        if (!parsed.ok) return { kind: 'error', reason: parsed.reason, inHead: true };
        const head = parsed.head;
        // Whether the server switches is in its answer, which the framer
        // does not see; following the client blindly would let it send
        // unchecked requests after an Upgrade the server refused.
        if (head.switchesProtocol) return { kind: 'error', reason: `${head.method === 'CONNECT' ? 'CONNECT' : 'Upgrade'} cannot be followed`, inHead: true };
        this.state = head.framing.kind === 'length' ? { at: 'body', left: head.framing.length } : head.framing.kind === 'chunked' ? { at: 'chunk-size' } : { at: 'head' };
        return { kind: 'request', head, bytes };
      }
      case 'body':
      case 'chunk-data': {
        const bytes = this.take(Math.min(s.left, this.pending.length));
        const left = s.left - bytes.length;
        if (left === 0) this.state = s.at === 'body' ? { at: 'head' } : { at: 'chunk-end' };
        else this.state = { at: s.at, left };
        return { kind: 'body', bytes };
      }
      case 'chunk-end': {
        if (this.pending.length < 2) return null;
        if (this.pending[0] !== 0x0d || this.pending[1] !== 0x0a) return { kind: 'error', reason: 'chunk not followed by CRLF', inHead: false };
        this.state = { at: 'chunk-size' };
        return { kind: 'body', bytes: this.take(2) };
      }
      case 'chunk-size':
      case 'trailers': {
        const i = this.pending.subarray(0, LINE_LIMIT).indexOf(CRLF);
        if (i < 0) return this.pending.length >= LINE_LIMIT ? { kind: 'error', reason: 'chunk line too long', inHead: false } : null;
        const line = this.pending.subarray(0, i).toString('latin1');
        if (/[\r\n\0]/.test(line)) return { kind: 'error', reason: 'bare CR, LF or NUL in a chunk line', inHead: false };
        if (s.at === 'trailers') {
          if (line !== '' && !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+:/.test(line)) return { kind: 'error', reason: 'malformed trailer', inHead: false };
          this.state = line === '' ? { at: 'head' } : s;
          return { kind: 'body', bytes: this.take(i + 2) };
        }
        const m = CHUNK_LINE.exec(line);
        if (!m) return { kind: 'error', reason: 'malformed chunk size or extension', inHead: false };
        const digits = (m[1] ?? '').replace(/^0+(?=.)/, '');
        if (digits.length > 16 || BigInt(`0x${digits}`) > MAX_CHUNK) return { kind: 'error', reason: 'chunk size too large', inHead: false };
        const size = Number(BigInt(`0x${digits}`));
        this.state = size === 0 ? { at: 'trailers' } : { at: 'chunk-data', left: size };
        return { kind: 'body', bytes: this.take(i + 2) };
      }
      case 'failed':
        return null;
    }
  }

  private take(n: number): Buffer {
    const bytes = this.pending.subarray(0, n);
    this.pending = this.pending.subarray(n);
    return bytes;
  }
}
