/**
 * The proxy's connection to the original destination. Its socket carries
 * the proxy mark (SO_MARK) from before the SYN and is recorded as the
 * proxy's own before it connects: that record, not the mark, is what
 * interception never steers. Either the kernel does both when the socket
 * is made (own-sockets.ts: a plain net.connect()), or the proxy makes the
 * socket by hand with the mark and records it (onSocket, see
 * ProxyOptions.ownSocket).
 */
import net from 'node:net';
import { markedSocket } from '../sys/socket.js';

export interface UpstreamOptions {
  host: string;
  port: number;
  mark: number;
  timeoutMs: number;
  /** The kernel marks and records every socket of this process
   * (own-sockets.ts): no socket by hand, no onSocket. */
  kernelOwned?: boolean;
  /** Called with the socket before it connects, and with its fd when made
   * by hand (null when kernelOwned: node makes it at connect). */
  onSocket?: (sock: net.Socket, fd: number | null) => void;
}

function handMade(o: UpstreamOptions): net.Socket {
  const fd = markedSocket(net.isIPv6(o.host) ? 6 : 4, o.mark);
  // pauseOnCreate: node would otherwise start reading the fd before it is
  // connected (an unconnected socket polls as hung up, read as EOF).
  const sock = new net.Socket({ fd, allowHalfOpen: true, pauseOnCreate: true } as net.SocketConstructorOpts);
  try {
    o.onSocket?.(sock, fd);
  } catch (err) {
    sock.destroy();
    throw err;
  }
  return sock;
}

/** Connected socket (paused: nothing is read until the caller resumes or
 * pipes it), or rejects with the connect error (ECONNREFUSED,
 * ETIMEDOUT...). */
export function connectUpstream(o: UpstreamOptions): Promise<net.Socket> {
  let sock: net.Socket;
  if (o.kernelOwned) {
    sock = new net.Socket({ allowHalfOpen: true });
    // Paused before it connects: node then does not start reading on connect.
    sock.pause();
    try {
      o.onSocket?.(sock, null);
    } catch (err) {
      sock.destroy();
      return Promise.reject(err as Error);
    }
  } else {
    try {
      sock = handMade(o);
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      sock.destroy();
      reject(Object.assign(new Error(`connect ${o.host}:${o.port} timed out`), { code: 'ETIMEDOUT' }));
    }, o.timeoutMs);
    sock.once('error', (err) => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    });
    sock.connect({ host: o.host, port: o.port }, () => {
      clearTimeout(timer);
      sock.removeAllListeners('error');
      resolve(sock);
    });
  });
}
