/**
 * The one place that touches node's private socket internals. node's public
 * API has no way to get a net.Socket's descriptor, nor to make it stop
 * reading the kernel's receive queue right now (pause() only stops 'data'
 * events: node keeps reading into its buffer up to the high-water mark).
 * The splicer needs both to hand a connection to the kernel without losing
 * or reordering a byte, the proxy and the splice servers need the
 * descriptor to ask the kernel about a socket.
 *
 * What is used, on a connected net.Socket (node's lib/net.js, lib/internal/
 * streams/readable.js, lib/internal/stream_base_commons.js):
 *  - `_handle`: the libuv stream wrap (TCPWrap); null once the socket is
 *    closed.
 *  - `_handle.fd`: its file descriptor (a getter, on Unix).
 *  - `_handle.readStop()`: uv_read_stop, libuv stops reading at once.
 *  - `_handle.reading`: net's flag that readStart() was called; net's
 *    _read() calls `_handle.readStart()` (tryReadStart) only while it is
 *    false, so it must be cleared along with readStop().
 *  - `_handle.getsockname(out)`: uv_tcp_getsockname, fills out.address
 *    and out.port; unlike net.Socket's localAddress, it answers while the
 *    socket is still connecting (bound by connect()).
 *  - `_readableState.reading`: the stream's flag that a _read() is under
 *    way; read() calls _read() only while it is false, so it must be
 *    cleared too for resume() to start reading again.
 *  - the symbol-keyed own properties `kBuffer` and `kBufferCb` of every
 *    net.Socket, and `_handle.useUserBuffer(buffer)`: what the public
 *    `onread` option of the net.Socket constructor sets up (net's
 *    initSocketHandle), done on a socket that exists (readIntoBuffer).
 * test/sys/node-internals.test.ts checks that each exists and behaves as
 * described, and names the one that changed when a node upgrade breaks it.
 */
import type net from 'node:net';
import { AccelError, ErrorCodes } from '../errors.js';

/** What node keeps on a net.Socket, as far as this module uses it. */
interface SocketInternals {
  _handle?: { fd?: unknown; reading?: unknown; readStop?: unknown; getsockname?: unknown; useUserBuffer?: unknown } | null;
  _readableState?: { reading?: unknown };
}

function internals(sock: net.Socket): SocketInternals {
  return sock as unknown as SocketInternals;
}

function changed(what: string): AccelError {
  return new AccelError(ErrorCodes.INTERNAL, `node ${process.version}: the net.Socket internal ${what} is not what accel expects (see src/sys/node-internals.ts)`);
}

/** The local address and port of a socket that is bound (a connecting one
 * is), as node names them (the address as remoteAddress would give it on
 * the other end); null while it has no handle or is not bound. */
export function socketLocalName(sock: net.Socket): { address: string; port: number } | null {
  const h = internals(sock)._handle;
  if (!h) return null;
  if (typeof h.getsockname !== 'function') throw changed('_handle.getsockname');
  const out: { address?: string; port?: number } = {};
  const rc = (h.getsockname as (o: object) => number).call(h, out);
  return rc === 0 && out.address !== undefined && out.port ? { address: out.address, port: out.port } : null;
}

/** The descriptor behind a node net.Socket (libuv's handle), or null when
 * it has none (closed, or never opened). */
export function nodeSocketFd(sock: net.Socket): number | null {
  const fd = internals(sock)._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : null;
}

/**
 * Make node stop reading the socket before the event loop runs again: bytes
 * that arrive from now on stay in the kernel's receive queue. The stream is
 * told that no read is outstanding, so that a later resume() (or read())
 * starts libuv reading again. Pause the socket first, so that nothing asks
 * for a read in between. A resume() made in the same tick still starts a
 * read (the stream does that work on nextTick). A socket without a handle
 * (closed) is left alone.
 */
export function stopReading(sock: net.Socket): void {
  const s = internals(sock);
  const h = s._handle;
  if (h) {
    if (typeof h.readStop !== 'function') throw changed('_handle.readStop');
    h.reading = false;
    (h.readStop as () => number).call(h);
  }
  const state = s._readableState;
  if (state === undefined || typeof state.reading !== 'boolean') throw changed('_readableState.reading');
  state.reading = false;
}

/** Whether a read is outstanding: libuv reading the descriptor (net's
 * `_handle.reading`; null without a handle) and the stream waiting on a
 * _read() (`_readableState.reading`). For the test that guards these
 * internals, and for diagnostics. */
export function readingState(sock: net.Socket): { handle: boolean | null; stream: boolean } {
  const s = internals(sock);
  const h = s._handle;
  if (h && typeof h.reading !== 'boolean') throw changed('_handle.reading');
  const state = s._readableState;
  if (state === undefined || typeof state.reading !== 'boolean') throw changed('_readableState.reading');
  return { handle: h ? (h.reading as boolean) : null, stream: state.reading };
}

/** net's private symbols for a socket's user buffer (the same for every
 * socket; not exported, their descriptions name them), found once. */
let bufferSymbols: { kBuffer: symbol; kBufferCb: symbol; kBufferGen: symbol } | null = null;

function socketSymbol(keys: symbol[], name: string): symbol {
  const key = keys.find((k) => k.description === name);
  if (key === undefined) throw changed(name);
  return key;
}

/**
 * Make a connected socket read into `buffer`, the same buffer for every
 * read, and hand each read to `onRead(bytes)`, instead of node allocating a
 * new buffer per read and emitting it as 'data': what the net.Socket
 * constructor's `onread` option does (a server's accepted sockets cannot be
 * given it). Several sockets may share one buffer: node runs one read
 * callback at a time, and `onRead` must be done with the bytes when it
 * returns (the next read overwrites them). `onRead` returning false stops
 * reading (libuv's too) until resume(); pause() stops it as well. 'end',
 * 'error' and 'close' come as before; 'data' no longer does. What the
 * socket read into its own buffer before this stays there (read() it first).
 */
export function readIntoBuffer(sock: net.Socket, buffer: Buffer, onRead: (bytes: number) => boolean): void {
  const h = internals(sock)._handle;
  if (!h || sock.connecting) throw new AccelError(ErrorCodes.INTERNAL, 'readIntoBuffer: the socket is not connected');
  if (typeof h.useUserBuffer !== 'function') throw changed('_handle.useUserBuffer');
  if (bufferSymbols === null) {
    const keys = Object.getOwnPropertySymbols(sock);
    bufferSymbols = { kBuffer: socketSymbol(keys, 'kBuffer'), kBufferCb: socketSymbol(keys, 'kBufferCb'), kBufferGen: socketSymbol(keys, 'kBufferGen') };
  }
  const { kBuffer, kBufferCb, kBufferGen } = bufferSymbols;
  const s = sock as unknown as Record<symbol, unknown>;
  // A buffer generator (the option's other form) would replace ours.
  if (s[kBuffer] !== null || s[kBufferGen] !== null) throw changed('kBuffer/kBufferGen (null on a socket made without onread)');
  s[kBuffer] = buffer;
  s[kBufferCb] = onRead;
  (h.useUserBuffer as (b: Buffer) => void).call(h, buffer);
}
