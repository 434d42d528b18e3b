// Holding a spliced socket's bytes in its receive queue (SO_RCVLOWAT) must
// not make TCP grow its receive buffer: a buffer grown to tcp_rmem's maximum
// cannot absorb an overcommitted window any more, and a held socket then
// drops segments its sender was allowed to send, which puts the sender in
// exponential retransmission backoff (the spliced echo stalled for minutes).
// Plain TCP over 127.0.0.1, no privileges.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { nodeSocketFd } from '../../src/sys/node-internals.js';
import { rcvLowatWithinBuffer, receiveBuffer, setRcvLowat } from '../../src/sys/socket.js';

const rmemMax = Number(readFileSync('/proc/sys/net/ipv4/tcp_rmem', 'utf8').trim().split(/\s+/)[2]);

describe('a receive low-water mark that holds bytes back', () => {
  let server: net.Server;
  const open: net.Socket[] = [];

  before(async () => {
    server = net.createServer((s) => open.push(s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  });
  after(async () => {
    for (const s of open) s.destroy();
    await new Promise((r) => server.close(r));
  });

  async function connected(): Promise<number> {
    const port = (server.address() as net.AddressInfo).port;
    const c = net.connect(port, '127.0.0.1');
    open.push(c);
    await new Promise((r) => c.once('connect', r));
    const fd = nodeSocketFd(c);
    assert.ok(fd !== null, 'the socket has a descriptor');
    return fd;
  }

  it('leaves the receive buffer at the size TCP gave it', async () => {
    const fd = await connected();
    const before = receiveBuffer(fd);
    assert.ok(before < rmemMax, `a new socket's buffer (${before}) is below tcp_rmem's maximum (${rmemMax})`);
    const lowat = rcvLowatWithinBuffer(fd);
    assert.ok(lowat > 1, `a low-water mark that holds something back (${lowat})`);
    setRcvLowat(fd, lowat);
    assert.equal(receiveBuffer(fd), before, 'SO_RCVBUF unchanged');
    setRcvLowat(fd, 1);
    assert.equal(receiveBuffer(fd), before, 'SO_RCVBUF unchanged after the low-water mark is lowered again');
  });

  it('(the kernel behaviour it avoids: a high mark grows the buffer to the maximum)', async () => {
    const fd = await connected();
    setRcvLowat(fd, 0x7fffffff);
    assert.ok(receiveBuffer(fd) >= rmemMax * 0.9, `a mark of INT_MAX grew SO_RCVBUF to ${receiveBuffer(fd)} (tcp_rmem max ${rmemMax})`);
  });
});
