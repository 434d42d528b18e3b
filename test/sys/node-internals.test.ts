// node's private net.Socket internals that src/sys/node-internals.ts relies
// on (the descriptor, stopping libuv's reads, the stream's read flag) still
// exist and behave as it expects. Plain TCP over 127.0.0.1, no privileges.
// A failure names the node version and the internal that changed.
import assert from 'node:assert/strict';
import { fstatSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { nodeSocketFd, readIntoBuffer, readingState, socketLocalName, stopReading } from '../../src/sys/node-internals.js';

/** Run `check`; any failure is reported as `internal` having changed in
 * this node version. */
async function guard(internal: string, check: () => Promise<void> | void): Promise<void> {
  try {
    await check();
  } catch (err) {
    const e = new assert.AssertionError({
      message: `node ${process.version}: the net.Socket internal ${internal} changed (src/sys/node-internals.ts relies on it): ${(err as Error).message}`,
    });
    e.cause = err;
    throw e;
  }
}

interface TcpRow {
  localPort: number;
  remotePort: number;
  rxQueue: number;
  inode: number;
}

/** /proc/net/tcp: the IPv4 TCP sockets of this network namespace. */
function tcpTable(): TcpRow[] {
  return readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .filter((l) => l.trim())
    .map((l) => {
      const f = l.trim().split(/\s+/);
      const port = (a: string | undefined) => parseInt(a?.split(':')[1] ?? '', 16);
      return { localPort: port(f[1]), remotePort: port(f[2]), rxQueue: parseInt(f[4]?.split(':')[1] ?? '', 16), inode: Number(f[9]) };
    });
}

function row(localPort: number, remotePort: number): TcpRow {
  const r = tcpTable().find((x) => x.localPort === localPort && x.remotePort === remotePort);
  assert.ok(r, `no /proc/net/tcp entry for 127.0.0.1:${localPort} <-> :${remotePort}`);
  return r;
}

/** Let what node scheduled run: on('data') calls resume(), whose work
 * (Readable's resume_, on nextTick) would start a read again after
 * stopReading() in the same tick. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

async function until(what: string, cond: () => boolean, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

describe('node net.Socket internals (src/sys/node-internals.ts)', () => {
  let server: net.Server;
  let port: number;

  /** A connected pair: the client and the socket the server accepted. */
  async function pair(): Promise<{ client: net.Socket; accepted: net.Socket }> {
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const client = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => client.once('connect', resolve).once('error', reject));
    return { client, accepted: await accepted };
  }

  before(async () => {
    server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('_handle.fd is the descriptor of this very socket, and goes with the handle', { timeout: 5000 }, async () => {
    const { client, accepted } = await pair();
    try {
      await guard('_handle.fd', () => {
        const fd = nodeSocketFd(client);
        assert.ok(fd !== null, '_handle.fd is not a descriptor');
        const st = fstatSync(fd);
        assert.ok(st.isSocket(), `fd ${fd} is not a socket`);
        const link = readlinkSync(`/proc/self/fd/${fd}`);
        assert.match(link, /^socket:\[\d+\]$/, `/proc/self/fd/${fd} -> ${link}`);
        assert.equal(link, `socket:[${st.ino}]`);
        // The kernel's own table ties the inode to this connection's ports.
        assert.equal(row(client.localPort as number, port).inode, st.ino, "fd's socket is not the client's TCP connection");
        const other = nodeSocketFd(accepted);
        assert.ok(other !== null && other !== fd, 'the accepted socket has no descriptor of its own');
        assert.equal(row(port, client.localPort as number).inode, fstatSync(other).ino, "fd's socket is not the accepted TCP connection");
      });
    } finally {
      client.destroy();
      accepted.destroy();
    }
    await guard('_handle (null once closed)', () => assert.equal(nodeSocketFd(client), null));
  });

  it("_handle.getsockname names a socket bound by connect() as the accepted end's remoteAddress names it, and nothing before", { timeout: 5000 }, async () => {
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    const client = new net.Socket();
    assert.equal(socketLocalName(client), null, 'no handle: no name');
    client.connect(port, '127.0.0.1');
    try {
      // connect() binds on the next tick.
      await guard('_handle.getsockname', async () => {
        await until('a name while connecting', () => socketLocalName(client) !== null);
      });
      const name = socketLocalName(client);
      const other = await accepted;
      assert.deepEqual(name, { address: other.remoteAddress, port: other.remotePort });
      other.destroy();
    } finally {
      client.destroy();
    }
  });

  it('pause() alone lets node keep reading into its buffer (why stopReading exists)', { timeout: 5000 }, async () => {
    const { client, accepted } = await pair();
    try {
      await guard('_handle.reading / _readableState.reading', async () => {
        accepted.on('data', () => {});
        await settle();
        assert.equal(accepted.readableFlowing, true);
        assert.deepEqual(readingState(accepted), { handle: true, stream: true }, 'a flowing socket should have a read outstanding');
        accepted.pause();
        client.write(Buffer.alloc(1000, 1));
        // What this test measures: node reads the bytes, the kernel queue empties.
        await until('node to buffer the bytes of a paused socket', () => accepted.readableLength === 1000);
        assert.equal(row(port, client.localPort as number).rxQueue, 0);
      });
    } finally {
      client.destroy();
      accepted.destroy();
    }
  });

  it('_handle.readStop() stops reading while bytes are pending; resume() starts it again (_handle.readStart)', { timeout: 5000 }, async () => {
    const { client, accepted } = await pair();
    try {
      let got = 0;
      accepted.on('data', (chunk: Buffer) => {
        got += chunk.length;
      });
      await settle();
      accepted.pause();
      await guard('_handle.reading / _readableState.reading', () => {
        stopReading(accepted);
        assert.deepEqual(readingState(accepted), { handle: false, stream: false }, 'no read should be outstanding after stopReading');
      });
      await guard('_handle.readStop', async () => {
        client.write(Buffer.alloc(1000, 2));
        // The bytes wait in the kernel's receive queue: node does not read them.
        await until('1000 bytes in the receive queue', () => row(port, client.localPort as number).rxQueue === 1000);
        await sleep(50);
        assert.equal(accepted.readableLength, 0, 'node read the bytes after readStop');
        assert.equal(got, 0, "'data' came after readStop");
        assert.equal(row(port, client.localPort as number).rxQueue, 1000);
        assert.deepEqual(readingState(accepted), { handle: false, stream: false });
      });
      await guard('_handle.readStart (called by net.Socket#_read while _handle.reading is false)', async () => {
        accepted.resume();
        await until("the pending bytes as 'data' after resume()", () => got === 1000);
        assert.equal(row(port, client.localPort as number).rxQueue, 0);
        assert.deepEqual(readingState(accepted), { handle: true, stream: true }, 'resume() should leave a read outstanding');
        // And it keeps reading.
        client.write(Buffer.alloc(500, 3));
        await until("later bytes as 'data'", () => got === 1500);
      });
    } finally {
      client.destroy();
      accepted.destroy();
    }
  });
  it(
    "kBuffer, kBufferCb and _handle.useUserBuffer: reads land in the given buffer, no 'data'; false stops libuv, resume() starts it; 'end' still comes",
    { timeout: 5000 },
    async () => {
      const { client, accepted } = await pair();
      try {
        const buffer = Buffer.alloc(4096);
        const reads: string[] = [];
        let stop = false;
        let data = 0;
        accepted.on('data', () => data++);
        const ended = new Promise((resolve) => accepted.once('end', resolve));
        await guard('kBuffer / kBufferCb / _handle.useUserBuffer', async () => {
          accepted.pause();
          readIntoBuffer(accepted, buffer, (n) => {
            reads.push(buffer.toString('latin1', 0, n));
            return !stop;
          });
          accepted.resume();
          client.write('first');
          await until('the first read', () => reads.join('') === 'first');
          stop = true;
          client.write('second');
          await until('the second read', () => reads.join('') === 'firstsecond');
          // It returned false: the next bytes wait in the kernel.
          client.write('third');
          await until('5 bytes in the receive queue', () => row(port, client.localPort as number).rxQueue === 5);
          await sleep(50);
          assert.equal(reads.join(''), 'firstsecond', 'read after onRead returned false');
          stop = false;
          accepted.resume();
          await until('the third read after resume()', () => reads.join('') === 'firstsecondthird');
          client.end();
          await ended;
          assert.equal(data, 0, "'data' came as well");
          assert.throws(() => readIntoBuffer(accepted, buffer, () => true), /kBuffer/, 'a second call must be refused');
        });
      } finally {
        client.destroy();
        accepted.destroy();
      }
    },
  );
});
