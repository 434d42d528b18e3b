// The bounds the servers share (src/stream/limits.ts), on plain loopback
// TCP without privileges: the connection limit resets the one past it, the
// idle timeout closes a silent connection and spares one whose bytes move,
// also when they move only in the kernel (what a spliced socket does).
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Admission, ConnectionLimit, IdleTimeout, sourceKey } from '../../src/stream/limits.js';
import { stopReading } from '../../src/sys/node-internals.js';
import { tcpBytesMoved } from '../../src/sys/socket.js';
import { nodeSocketFd } from '../../src/sys/node-internals.js';

const servers: net.Server[] = [];
const sockets: net.Socket[] = [];
after(() => {
  servers.forEach((s) => s.close());
  sockets.forEach((s) => s.destroy());
});

async function listen(onConnection: (sock: net.Socket) => void): Promise<number> {
  const server = net.createServer({ pauseOnConnect: true }, (sock) => {
    sockets.push(sock);
    sock.on('error', () => {});
    onConnection(sock);
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

/** A client connection and how it ended (null while open). */
function client(port: number, from?: string) {
  const sock = net.connect({ port, host: '127.0.0.1', ...(from ? { localAddress: from } : {}) });
  sockets.push(sock);
  const c = { sock, data: '', ended: null as string | null, at: 0 };
  sock.on('data', (d) => (c.data += String(d)));
  sock.on('error', (e: NodeJS.ErrnoException) => (c.ended ??= e.code ?? e.message));
  sock.once('close', () => {
    c.ended ??= 'closed';
    c.at = Date.now();
  });
  return c;
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await sleep(5);
  return cond();
}

describe('ConnectionLimit', () => {
  it('resets the connection past the maximum at once and lets the others work', async () => {
    const limit = new ConnectionLimit(2, 'test');
    const open = new Set<net.Socket>();
    let refused = 0;
    const port = await listen((sock) => {
      if (!limit.admit(sock, open.size).ok) {
        refused++;
        return;
      }
      open.add(sock);
      sock.once('close', () => open.delete(sock));
      sock.pipe(sock);
    });
    const a = client(port);
    const b = client(port);
    a.sock.write('a');
    b.sock.write('b');
    assert.ok(await until(() => a.data === 'a' && b.data === 'b', 2000), 'the first two are echoed');
    const c = client(port);
    c.sock.write('c');
    assert.ok(await until(() => c.ended !== null, 2000), 'the third is closed');
    assert.equal(c.ended, 'ECONNRESET');
    assert.equal(c.data, '');
    assert.equal(refused, 1);
    a.sock.write('a');
    b.sock.write('b');
    assert.ok(await until(() => a.data === 'aa' && b.data === 'bb', 2000), 'the first two still work');
    // One leaves: a new one is taken again.
    a.sock.destroy();
    assert.ok(await until(() => open.size === 1, 2000));
    const d = client(port);
    d.sock.write('d');
    assert.ok(await until(() => d.data === 'd', 2000), 'taken once below the maximum');
    [b, d].forEach((x) => x.sock.destroy());
  });

  it('resets a source past its own maximum, and counts it as such, while other sources still get in', async () => {
    const limit = new ConnectionLimit(0, 'test', 2);
    const refusals: Admission[] = [];
    const port = await listen((sock) => {
      const a = limit.admit(sock, 0);
      if (!a.ok) return refusals.push(a);
      sock.pipe(sock);
    });
    const a = client(port, '127.0.0.1');
    const b = client(port, '127.0.0.1');
    a.sock.write('a');
    b.sock.write('b');
    assert.ok(await until(() => a.data === 'a' && b.data === 'b', 2000));
    const c = client(port, '127.0.0.1');
    c.sock.write('c');
    assert.ok(await until(() => c.ended !== null, 2000), 'the third from 127.0.0.1 is closed');
    assert.equal(c.ended, 'ECONNRESET');
    assert.deepEqual(refusals, [{ ok: false, why: 'source' }]);
    const other = client(port, '127.0.0.2');
    other.sock.write('o');
    assert.ok(await until(() => other.data === 'o', 2000), 'another source is taken');
    assert.equal(limit.openFrom('127.0.0.1'), 2);
    a.sock.destroy();
    assert.ok(await until(() => limit.openFrom('127.0.0.1') === 1, 2000), 'a closed connection leaves its source');
    const d = client(port, '127.0.0.1');
    d.sock.write('d');
    assert.ok(await until(() => d.data === 'd', 2000), 'taken again below the per-source maximum');
    assert.equal(refusals.length, 1);
    [b, d, other].forEach((x) => x.sock.destroy());
    assert.ok(await until(() => limit.openFrom('127.0.0.1') === 0 && limit.openFrom('127.0.0.2') === 0, 2000), 'no source left behind');
  });

  it('keys a source by its IPv4 address (mapped or not) or the /64 of its IPv6 address', () => {
    assert.equal(sourceKey('10.0.0.1'), sourceKey('::ffff:10.0.0.1'));
    assert.notEqual(sourceKey('10.0.0.1'), sourceKey('10.0.0.2'));
    assert.equal(sourceKey('fd00:1:2:3::1'), sourceKey('fd00:1:2:3:aaaa:bbbb:cccc:dddd'));
    assert.notEqual(sourceKey('fd00:1:2:3::1'), sourceKey('fd00:1:2:4::1'));
  });

  it('0 means no limit', async () => {
    const limit = new ConnectionLimit(0, 'test');
    const port = await listen((sock) => {
      assert.ok(limit.admit(sock, 1_000_000).ok);
      sock.destroy();
    });
    const c = client(port);
    assert.ok(await until(() => c.ended !== null, 2000));
    assert.notEqual(c.ended, 'ECONNRESET');
  });
});

describe('IdleTimeout', () => {
  const TIMEOUT = 400;

  it('closes a silent connection after the timeout, not before, and keeps one that talks', async () => {
    const closed: string[] = [];
    const idle = new IdleTimeout(TIMEOUT, (label) => closed.push(label));
    after(() => idle.stop());
    const port = await listen((sock) => {
      idle.watch(`from ${sock.remotePort}`, sock);
      sock.pipe(sock);
    });
    const quiet = client(port);
    const busy = client(port);
    quiet.sock.write('x');
    assert.ok(await until(() => quiet.data === 'x', 2000));
    const quietPort = quiet.sock.localPort;
    const lastByte = Date.now();
    for (let i = 0; i < 12; i++) {
      busy.sock.write('y');
      await sleep(100);
    }
    assert.ok(await until(() => quiet.ended !== null, 2000), 'the silent connection was closed');
    const after_ = quiet.at - lastByte;
    // Not before the timeout; the margin after it is wide: this process
    // runs both ends and the sweep, and a busy machine delays all three.
    assert.ok(after_ >= TIMEOUT - 20 && after_ < TIMEOUT + 1500, `closed ${after_} ms after its last byte`);
    assert.equal(busy.ended, null, 'the busy one is open');
    assert.equal(busy.data, 'y'.repeat(12));
    assert.deepEqual(closed, [`from ${quietPort}`]);
    busy.sock.destroy();
  });

  // The whole process stops (here: a synchronous wait; a GC pause or a
  // starved CPU elsewhere) for longer than the timeout, right after a look
  // that saw the last byte: nothing could move meanwhile, and that is not
  // the connection's silence.
  it('does not count a time the process did not run as silence', async () => {
    let closed = 0;
    const idle = new IdleTimeout(TIMEOUT, () => closed++);
    after(() => idle.stop());
    const port = await listen((sock) => {
      idle.watch('stalled', sock);
      sock.pipe(sock);
    });
    const c = client(port);
    c.sock.write('a');
    assert.ok(await until(() => c.data === 'a', 2000));
    await sleep(TIMEOUT / 2); // a look or two records the byte
    const stallUntil = Date.now() + 2 * TIMEOUT;
    while (Date.now() < stallUntil) {
      /* the process does not run its timers */
    }
    await sleep(TIMEOUT / 4); // the late look, and the next
    assert.equal(c.ended, null, 'open after the stall');
    assert.equal(closed, 0);
    // Silent from now on: closed after the timeout, as any.
    assert.ok(await until(() => c.ended !== null, TIMEOUT + 2000), 'then closed once silent');
    assert.equal(closed, 1);
  });

  // node reads nothing from the server's socket: its bytes wait in the
  // kernel, as a spliced socket's move there. tcp_info sees them.
  it('keeps a connection whose bytes move only in the kernel', async () => {
    let closed = 0;
    const idle = new IdleTimeout(TIMEOUT, () => closed++);
    after(() => idle.stop());
    let server: net.Socket | null = null;
    const port = await listen((sock) => {
      server = sock;
      stopReading(sock);
      idle.watch('kernel only', sock);
    });
    const c = client(port);
    for (let i = 0; i < 15; i++) {
      c.sock.write(Buffer.alloc(100));
      await sleep(100);
    }
    assert.ok(server);
    const s = server as net.Socket;
    assert.equal(s.bytesRead, 0, 'node read nothing');
    assert.ok(tcpBytesMoved(nodeSocketFd(s) ?? -1) >= 1500n, 'the kernel received every byte');
    assert.equal(closed, 0, 'not closed while bytes moved');
    assert.equal(c.ended, null);
    // Then silence: closed.
    assert.ok(await until(() => c.ended !== null, TIMEOUT + 1500), 'closed once silent');
    assert.equal(closed, 1);
  });

  it('a partner that joins counts: idle only when neither moves', async () => {
    let closed = 0;
    const idle = new IdleTimeout(TIMEOUT, () => closed++);
    after(() => idle.stop());
    const accepted: net.Socket[] = [];
    const port = await listen((sock) => {
      accepted.push(sock);
      sock.resume();
    });
    const a = client(port);
    const b = client(port);
    assert.ok(await until(() => accepted.length === 2, 2000));
    const [sa, sb] = accepted as [net.Socket, net.Socket];
    idle.watch('pair', sa).add(sb);
    for (let i = 0; i < 10; i++) {
      b.sock.write('z'); // only b talks
      await sleep(100);
    }
    assert.equal(closed, 0);
    assert.equal(a.ended, null);
    assert.ok(await until(() => a.ended !== null && b.ended !== null, TIMEOUT + 1500), 'both closed together once silent');
    assert.equal(closed, 1);
  });

  // What a shortcut does: its bytes pass the connection's sockets, and
  // only a count kept elsewhere (the kernel's, in the shortcut's entries)
  // says they move.
  it('a count added to a connection counts as its sockets do; the close calls beforeClose first', async () => {
    let closed = 0;
    const idle = new IdleTimeout(TIMEOUT, () => closed++);
    after(() => idle.stop());
    const port = await listen((sock) => {
      const w = idle.watch('counted', sock);
      w.count(() => BigInt(moved));
      w.beforeClose(() => (sawOpen = !sock.destroyed));
      sock.resume();
    });
    let moved = 0;
    let sawOpen: boolean | null = null;
    const c = client(port);
    for (let i = 0; i < 12; i++) {
      moved += 100; // nothing on the socket
      await sleep(100);
    }
    assert.equal(closed, 0, 'not closed while the count moved');
    assert.equal(c.ended, null);
    assert.equal(sawOpen, null);
    assert.ok(await until(() => c.ended !== null, TIMEOUT + 1500), 'closed once the count stood still');
    assert.equal(closed, 1);
    assert.equal(sawOpen, true, 'beforeClose ran before the sockets were destroyed');
  });

  it('0 means never', async () => {
    const idle = new IdleTimeout(0, () => assert.fail('closed'));
    const port = await listen((sock) => {
      idle.watch('never', sock);
      sock.resume();
    });
    const c = client(port);
    await sleep(300);
    assert.equal(c.ended, null);
    c.sock.destroy();
  });
});
