/**
 * libc socket calls node's net module does not offer, on plain fds (the
 * bindings are declared in src/bpf/native.ts, the one koffi importer).
 *
 * Sockets with options node cannot set: a transparent listener
 * (IP_TRANSPARENT, so that connections bpf_sk_assign hands it keep their
 * original destination as local address) and a client socket carrying
 * SO_MARK (the proxy's upstream side, which interception skips). Each
 * returns a plain fd for node's net.Server / net.Socket to own.
 *
 * Reading a socket's kernel state: its cookie and its network namespace's,
 * tcp_info, the send queue; SO_RCVLOWAT, a second descriptor, shutdown.
 */
import { AccelError, ErrorCodes } from '../errors.js';
import { describeErrno, errnoName } from '../bpf/errno.js';
import { lastErrno, libcFns } from '../bpf/native.js';
import { seam } from '../seams.js';

const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const SO_REUSEPORT = 15;
const SO_MARK = 36;
const SO_SNDBUF = 7;
const SOL_IP = 0;
const IP_TRANSPARENT = 19;
const SOL_IPV6 = 41;
const TCP_DEFER_ACCEPT = 9;
const IPV6_V6ONLY = 26;
const IPV6_TRANSPARENT = 75;
const AF_INET = 2;
const AF_INET6 = 10;
const EADDRINUSE = 98;

export type Family = 4 | 6;

function check(rc: number, what: string, fd?: number): void {
  if (rc >= 0) return;
  const errno = lastErrno();
  if (fd !== undefined) libcFns.close(fd);
  throw new AccelError(errno === EADDRINUSE ? ErrorCodes.ADDRESS_IN_USE : ErrorCodes.INTERNAL, `${what}: ${describeErrno(errno)}`, { errno: errnoName(errno) });
}

function setInt(fd: number, level: number, name: number, value: number, what: string): void {
  const v = Buffer.alloc(4);
  v.writeInt32LE(value);
  check(libcFns.setsockopt(fd, level, name, v, 4) as number, what, fd);
}

/** setInt on a socket someone else owns: a failure leaves it open. */
function setIntKeepOpen(fd: number, level: number, name: number, value: number, what: string): void {
  const v = Buffer.alloc(4);
  v.writeInt32LE(value);
  check(libcFns.setsockopt(fd, level, name, v, 4) as number, what);
}

function newSocket(family: Family): number {
  const fd = libcFns.socket(family === 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
  check(fd, 'socket()');
  return fd;
}

/** struct sockaddr_in / sockaddr_in6 for a numeric address. */
function sockaddr(family: Family, address: string, port: number): Buffer {
  if (family === 4) {
    const b = Buffer.alloc(16);
    b.writeUInt16LE(AF_INET, 0);
    b.writeUInt16BE(port, 2);
    address.split('.').forEach((o, i) => b.writeUInt8(Number(o), 4 + i));
    return b;
  }
  const b = Buffer.alloc(28);
  b.writeUInt16LE(AF_INET6, 0);
  b.writeUInt16BE(port, 2);
  // Only the addresses the proxy binds: :: and ::1.
  if (address === '::1') b.writeUInt8(1, 23);
  else if (address !== '::') throw new AccelError(ErrorCodes.INTERNAL, `unsupported bind address ${address}`);
  return b;
}

/** A listening, non-blocking, transparent socket on address:port; with
 * reusePort, one of a SO_REUSEPORT group (the kernel spreads the port's new
 * connections over the group's sockets). */
export function transparentListener(family: Family, address: string, port: number, backlog: number, reusePort = false): number {
  const fd = newSocket(family);
  setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, 'SO_REUSEADDR');
  if (reusePort) setInt(fd, SOL_SOCKET, SO_REUSEPORT, 1, 'SO_REUSEPORT');
  // A test seam only: each accept waits for the connection's first bytes,
  // so every client writes before the proxy's socket is established.
  const deferAcceptS = seam('ACCEL_PROXY_DEFER_ACCEPT');
  if (deferAcceptS !== undefined) setInt(fd, SOL_TCP, TCP_DEFER_ACCEPT, deferAcceptS, 'TCP_DEFER_ACCEPT');
  if (family === 4) {
    setInt(fd, SOL_IP, IP_TRANSPARENT, 1, 'IP_TRANSPARENT (needs CAP_NET_ADMIN)');
  } else {
    setInt(fd, SOL_IPV6, IPV6_V6ONLY, 1, 'IPV6_V6ONLY');
    setInt(fd, SOL_IPV6, IPV6_TRANSPARENT, 1, 'IPV6_TRANSPARENT (needs CAP_NET_ADMIN)');
  }
  const addr = sockaddr(family, address, port);
  check(libcFns.bind(fd, addr, addr.length) as number, `bind ${family === 6 ? `[${address}]` : address}:${port}`, fd);
  check(libcFns.listen(fd, backlog) as number, 'listen()', fd);
  return fd;
}

/** Refuses (E_ADDRESS_IN_USE) when anything listens on address:port: a
 * listener, a SO_REUSEPORT group, or one on the wildcard address. A bind
 * only, closed at once: it never listens, so no connection ever waits on
 * it. Options as transparentListener's, without SO_REUSEPORT (which would
 * let it share the port with a group of the same user) and without
 * IP_TRANSPARENT (not needed to bind a local address): no privilege. */
export function requirePortFree(family: Family, address: string, port: number): void {
  const fd = newSocket(family);
  setInt(fd, SOL_SOCKET, SO_REUSEADDR, 1, 'SO_REUSEADDR');
  if (family === 6) setInt(fd, SOL_IPV6, IPV6_V6ONLY, 1, 'IPV6_V6ONLY');
  const addr = sockaddr(family, address, port);
  check(libcFns.bind(fd, addr, addr.length) as number, `bind ${family === 6 ? `[${address}]` : address}:${port}`, fd);
  libcFns.close(fd);
}

/** An unconnected, non-blocking TCP socket whose packets carry `mark`. */
export function markedSocket(family: Family, mark: number): number {
  const fd = newSocket(family);
  setInt(fd, SOL_SOCKET, SO_MARK, mark | 0, 'SO_MARK (needs CAP_NET_ADMIN)');
  return fd;
}

/**
 * The local address and port a socket is bound to (a connecting socket is
 * bound by connect()), the address in 16 bytes with IPv4 as v4-mapped; null
 * while it is not bound.
 */
export function localEndpoint(fd: number): { address: Buffer; port: number } | null {
  const sa = Buffer.alloc(28);
  check(libcFns.getsockname(fd, sa, [sa.length]) as number, 'getsockname()');
  const port = sa.readUInt16BE(2);
  if (port === 0) return null;
  const address = Buffer.alloc(16);
  if (sa.readUInt16LE(0) === AF_INET) {
    address.writeUInt16BE(0xffff, 10);
    sa.copy(address, 12, 4, 8);
  } else {
    sa.copy(address, 0, 8, 24);
  }
  return { address, port };
}

const SO_RCVLOWAT = 18;
const SO_COOKIE = 57;
const SOL_TCP = 6;
const TCP_INFO = 11;
/* struct tcp_info (linux/tcp.h): tcpi_bytes_acked @120,
 * tcpi_bytes_received @128. */
const TCP_INFO_SIZE = 232;
const TCPI_BYTES_ACKED = 120;
const TCPI_BYTES_RECEIVED = 128;
/** ioctl: bytes in the send queue not yet acknowledged (write_seq - snd_una). */
const SIOCOUTQ = 0x5411;

/** The kernel's cookie of a socket (what BPF's bpf_get_socket_cookie sees). */
export function socketCookie(fd: number): bigint {
  const v = Buffer.alloc(8);
  check(libcFns.getsockopt(fd, SOL_SOCKET, SO_COOKIE, v, [8]) as number, 'SO_COOKIE');
  return v.readBigUInt64LE(0);
}

const SO_NETNS_COOKIE = 71;

/** Cookie of the network namespace the socket lives in. */
export function netnsCookie(fd: number): bigint {
  const v = Buffer.alloc(8);
  check(libcFns.getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, v, [8]) as number, 'SO_NETNS_COOKIE');
  return v.readBigUInt64LE(0);
}

/** Cookie of the network namespace this process is in (that of a socket
 * made for the question). */
export function currentNetnsCookie(): bigint {
  const fd = newSocket(4);
  try {
    return netnsCookie(fd);
  } finally {
    libcFns.close(fd);
  }
}

/** SO_RCVLOWAT. Setting it also makes TCP re-check readiness and call the
 * socket's data-ready callback when data is queued (tcp_set_rcvlowat). */
const SO_RCVBUF = 8;

/**
 * The largest SO_RCVLOWAT that keeps `fd`'s receive buffer as it is. TCP
 * grows the buffer to fit a larger one (tcp_set_rcvlowat: the space for a
 * window of that size, as far as tcp_rmem's maximum), and a buffer grown to
 * that maximum loses TCP's own remedy for an overcommitted window: past
 * it, tcp_clamp_window can no longer raise the buffer to what was promised,
 * segments the sender was allowed to send are dropped, and the sender backs
 * off exponentially (docs/kernel-notes.md, "a held socket must not sit at
 * tcp_rmem's maximum"). A quarter of the buffer needs no growth unless
 * fewer than a quarter of a buffer's bytes are payload.
 */
export function rcvLowatWithinBuffer(fd: number): number {
  return Math.max(1, Math.floor(receiveBuffer(fd) / 4));
}

/** The receive buffer's size (SO_RCVBUF: sk_rcvbuf, overhead included). */
export function receiveBuffer(fd: number): number {
  const v = Buffer.alloc(4);
  check(libcFns.getsockopt(fd, SOL_SOCKET, SO_RCVBUF, v, [4]) as number, 'SO_RCVBUF');
  return v.readInt32LE(0);
}

export function setRcvLowat(fd: number, bytes: number): void {
  const v = Buffer.alloc(4);
  v.writeInt32LE(bytes);
  check(libcFns.setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, v, 4) as number, 'SO_RCVLOWAT');
}

export interface TcpStreamCounts {
  /** Sequence space received in order (tcpi_bytes_received: data, plus 1
   * once a FIN arrived). */
  received: bigint;
  /**
   * Sequence space taken into the send stream: acknowledged
   * (tcpi_bytes_acked, which counts the SYN of the side that connected)
   * plus still in the send queue (SIOCOUTQ), so every byte once whether it
   * was sent, retransmitted or dropped before it left this host. Read in
   * that order, an ACK in between makes it smaller, never larger.
   */
  sendStream: bigint;
  /** No ACK moved the send queue while sendStream was read (the queue held
   * the same before and after), so it is exact if nothing was written. */
  steady: boolean;
}

const TCP_ESTABLISHED = 1;
const TCP_CLOSE = 7;

function tcpInfo(fd: number): Buffer {
  const info = Buffer.alloc(TCP_INFO_SIZE);
  check(libcFns.getsockopt(fd, SOL_TCP, TCP_INFO, info, [TCP_INFO_SIZE]) as number, 'TCP_INFO');
  return info;
}

/** Is the TCP socket still ESTABLISHED (tcpi_state, the first byte)? */
export function tcpEstablished(fd: number): boolean {
  return tcpInfo(fd)[0] === TCP_ESTABLISHED;
}

/** Has the TCP connection ended for good (a reset, or both FINs and the
 * socket closed by the kernel: tcpi_state CLOSE)? */
export function tcpClosed(fd: number): boolean {
  return tcpInfo(fd)[0] === TCP_CLOSE;
}

function sendQueued(fd: number): number {
  const v = Buffer.alloc(4);
  check(libcFns.ioctl(fd, SIOCOUTQ, v) as number, 'SIOCOUTQ');
  return v.readInt32LE(0);
}

/** Bytes in the send queue (SIOCOUTQ) and the send buffer's size
 * (SO_SNDBUF, which counts the kernel's overhead as well). */
export function sendBacklog(fd: number): { queued: number; sndbuf: number } {
  const v = Buffer.alloc(4);
  check(libcFns.getsockopt(fd, SOL_SOCKET, SO_SNDBUF, v, [4]) as number, 'SO_SNDBUF');
  return { queued: sendQueued(fd), sndbuf: v.readInt32LE(0) };
}

/**
 * Bytes that moved on the connection so far, both ways: received in order
 * (tcpi_bytes_received) and sent and acknowledged (tcpi_bytes_acked). It
 * grows whenever a byte gets through, whoever moves it: node, or the kernel
 * for a spliced socket, whose bytes node never sees.
 */
export function tcpBytesMoved(fd: number): bigint {
  const info = tcpInfo(fd);
  return info.readBigUInt64LE(TCPI_BYTES_RECEIVED) + info.readBigUInt64LE(TCPI_BYTES_ACKED);
}

export function tcpStreamCounts(fd: number): TcpStreamCounts {
  const before = sendQueued(fd);
  const info = tcpInfo(fd);
  const queued = sendQueued(fd);
  return {
    received: info.readBigUInt64LE(TCPI_BYTES_RECEIVED),
    sendStream: info.readBigUInt64LE(TCPI_BYTES_ACKED) + BigInt(queued),
    steady: before === queued,
  };
}

const F_DUPFD_CLOEXEC = 1030;

/** A second descriptor of the same socket: the socket lives on until both
 * are closed. */
export function dupSocket(fd: number): number {
  const copy = libcFns.fcntl(fd, F_DUPFD_CLOEXEC, 0) as number;
  check(copy, 'fcntl(F_DUPFD_CLOEXEC)');
  return copy;
}

/** shutdown(SHUT_WR): send FIN after what is queued. Errors (already shut,
 * reset) are of no interest to callers. */
export function shutdownWrite(fd: number): void {
  libcFns.shutdown(fd, 1);
}

const SO_LINGER = 13;

/** SO_LINGER {on, 0}: when the socket's last descriptor closes, the kernel
 * sends a reset and drops what is queued, instead of a FIN after it. */
export function resetOnClose(fd: number): void {
  const v = Buffer.alloc(8); // struct linger { int l_onoff; int l_linger; }
  v.writeInt32LE(1, 0);
  v.writeInt32LE(0, 4);
  check(libcFns.setsockopt(fd, SOL_SOCKET, SO_LINGER, v, 8) as number, 'SO_LINGER');
}

/** SO_LINGER off again: a close sends a FIN after what is queued. Errors
 * (the socket gone) are of no interest to callers. */
export function lingerOff(fd: number): void {
  libcFns.setsockopt(fd, SOL_SOCKET, SO_LINGER, Buffer.alloc(8), 8);
}

/** SO_SNDBUF (the kernel doubles it, and stops sizing the buffer itself). */
export function setSendBuffer(fd: number, bytes: number): void {
  setIntKeepOpen(fd, SOL_SOCKET, SO_SNDBUF, bytes, 'SO_SNDBUF');
}

export function closeSocket(fd: number): void {
  libcFns.close(fd);
}
