/**
 * The proxy's connection to the original destination. Its socket carries
 * the proxy mark (SO_MARK) from before the SYN, and is recorded as the
 * proxy's own (onSocket, see ProxyOptions.ownSocket) before it connects:
 * that record, not the mark, is what interception never steers.
 */
import net from 'node:net';
import { markedSocket } from '../sys/socket.js';

export interface UpstreamOptions {
  host: string;
  port: number;
  mark: number;
  timeoutMs: number;
  /** Called with the socket and its fd before it connects. */
  onSocket?: (sock: net.Socket, fd: number) => void;
}

/** Connected socket, or rejects with the connect error (ECONNREFUSED,
 * ETIMEDOUT...). */
export function connectUpstream(o: UpstreamOptions): Promise<net.Socket> {
  const fd = markedSocket(net.isIPv6(o.host) ? 6 : 4, o.mark);
  // pauseOnCreate: node would otherwise start reading the fd before it is
  // connected (an unconnected socket polls as hung up, read as EOF).
  const sock = new net.Socket({ fd, allowHalfOpen: true, pauseOnCreate: true } as net.SocketConstructorOpts);
  try {
    o.onSocket?.(sock, fd);
  } catch (err) {
    sock.destroy();
    return Promise.reject(err as Error);
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
