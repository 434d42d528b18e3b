// requirePortFree, the probe of accel proxy --workers before it makes its
// SO_REUSEPORT group: a bind that never listens still refuses a port that a
// plain listener or another process's SO_REUSEPORT listener (of the same
// user, whose group a SO_REUSEPORT socket would join) holds. Rootless.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import readline from 'node:readline';
import { describe, it } from 'node:test';
import { AccelError } from '../../src/errors.js';
import { type Family, requirePortFree } from '../../src/sys/socket.js';

const HOSTS: [Family, string][] = [
  [4, '127.0.0.1'],
  [6, '::1'],
];

function listener(host: string, port = 0): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(port, host, () => resolve(s));
  });
}

const close = (s: net.Server) => new Promise<void>((resolve) => s.close(() => resolve()));
const openFds = () => fs.readdirSync('/proc/self/fd').length;

function refused(family: Family, host: string, port: number): void {
  const fds = openFds();
  assert.throws(
    () => requirePortFree(family, host, port),
    (err: unknown) => err instanceof AccelError && err.code === 'E_ADDRESS_IN_USE',
    `port ${port} on ${host} refused`,
  );
  assert.equal(openFds(), fds, 'the probe closed its socket');
}

describe('requirePortFree', () => {
  for (const [family, host] of HOSTS) {
    it(`passes a free port on ${host}, its socket closed`, async () => {
      const s = await listener(host);
      const port = (s.address() as net.AddressInfo).port;
      await close(s);
      const fds = openFds();
      requirePortFree(family, host, port);
      assert.equal(openFds(), fds, 'the probe closed its socket');
      await close(await listener(host, port));
    });

    it(`refuses a port a plain listener holds on ${host}`, async () => {
      const s = await listener(host);
      try {
        refused(family, host, (s.address() as net.AddressInfo).port);
      } finally {
        await close(s);
      }
    });

    it(`refuses a port another process's SO_REUSEPORT listener holds on ${host}`, async () => {
      const holder = spawn(
        'python3',
        [
          '-c',
          `import socket,sys,time\ns=socket.socket(socket.AF_INET${family === 6 ? '6' : ''})\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEPORT,1)\ns.bind((sys.argv[1],0))\ns.listen()\nprint(s.getsockname()[1],flush=True)\ntime.sleep(60)`,
          host,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      try {
        const line = await new Promise<string>((resolve, reject) => {
          holder.once('error', reject);
          holder.once('exit', (code) => reject(new Error(`the holder exited (${code})`)));
          readline.createInterface({ input: holder.stdout }).once('line', resolve);
        });
        const port = Number(line);
        assert.ok(port > 0, 'the other process listens');
        refused(family, host, port);
      } finally {
        holder.kill('SIGKILL');
      }
    });
  }
});
