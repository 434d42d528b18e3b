/** ClientHellos for the sniffer tests: the one Node's TLS stack sends, one
 * built byte by byte around any server name, and either re-split into
 * several TLS records. */
import net from 'node:net';
import tls from 'node:tls';

/** The ClientHello node's TLS stack sends for `servername`. */
export function realClientHello(servername: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((s) => {
      s.once('data', (d: Buffer) => {
        resolve(d);
        s.destroy();
        server.close();
      });
    });
    server.listen(0, '127.0.0.1', () => {
      const c = tls.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', servername, rejectUnauthorized: false });
      c.on('error', () => {});
    });
    server.on('error', reject);
  });
}

const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
const vec16 = (b: Buffer) => Buffer.concat([u16(b.length), b]);

/** A ClientHello handshake message (no record header) whose server_name
 * extension holds `name`, between `before` and `after` other extensions
 * (type, body). */
export function clientHelloMessage(name: Buffer, before: [number, Buffer][] = [], after: [number, Buffer][] = []): Buffer {
  const ext = (type: number, body: Buffer) => Buffer.concat([u16(type), vec16(body)]);
  const sni = ext(0, vec16(Buffer.concat([Buffer.from([0]), vec16(name)])));
  const body = Buffer.concat([
    Buffer.from([3, 3]),
    Buffer.alloc(32, 7),
    Buffer.from([0]),
    vec16(Buffer.from([0x13, 0x01])),
    Buffer.from([1, 0]),
    vec16(Buffer.concat([...before.map(([t, b]) => ext(t, b)), sni, ...after.map(([t, b]) => ext(t, b))])),
  ]);
  return Buffer.concat([Buffer.from([1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]), body]);
}

/** The handshake message carried by the records of `hello`. */
export function handshakeOf(hello: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (let p = 0; p + 5 <= hello.length; p += 5 + hello.readUInt16BE(p + 3)) parts.push(hello.subarray(p + 5, p + 5 + hello.readUInt16BE(p + 3)));
  return Buffer.concat(parts);
}

/** `message` in TLS handshake records, a new record starting at each cut
 * (offsets into the message; empty records are never made). */
export function inRecords(message: Buffer, cuts: number[] = []): Buffer {
  const points = [...new Set([0, ...cuts.filter((c) => c > 0 && c < message.length), message.length])].sort((a, b) => a - b);
  const records: Buffer[] = [];
  for (let i = 0; i + 1 < points.length; i++) {
    const fragment = message.subarray(points[i], points[i + 1]);
    records.push(Buffer.from([0x16, 3, 1]), u16(fragment.length), fragment);
  }
  return Buffer.concat(records);
}
