// Only accel proxy's own listening sockets receive intercepted connections:
// each proxy registers its listeners in the node's map of proxy listeners
// (src/maps/proxy-listeners.ts), and the lo program hands a new connection
// to the socket it finds there and to no other. A listener an unprivileged
// user opens on the proxy port while the proxy is down gets nothing, and the
// cgroup's connections fail at once, as with no listener at all.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { readProxyListeners } from '../../src/maps/proxy-listeners.js';
import { LO_INGRESS_PIN, attachmentPinDir, listAttachmentIds, proxyListenersPin } from '../../src/paths.js';
import { type Spawned, run, spawn } from '../../src/proc/run.js';
import { BPFFS, stopProcess } from '../helpers/env.js';
import { ECHO_PORT, FIXTURES, type InterceptBench, PROXY_PORT, SERVER4, SERVER6, interceptBench, nodeClient } from '../helpers/intercept.js';

/** A server in the application namespace, intercepted through --iface lo. */
const LOCAL_PORT = 7412;

/** The foreign listener: node as nobody, in the application namespace,
 * on 127.0.0.1 and [::1] at the proxy port. */
async function foreignListener(t: { after: (fn: () => Promise<void>) => void }, b: InterceptBench): Promise<Spawned> {
  const p = spawn('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, path.join(FIXTURES, 'foreign-listener.mjs'), String(PROXY_PORT)], {
    netns: b.app,
  });
  t.after(() => stopProcess(p));
  const line = await p.waitForLine((l) => l.includes('"event"'));
  assert.match(line ?? '', /"event":"listening","uid":65534/, `the foreign listener runs as nobody: ${line}`);
  return p;
}

const accepted = (p: Spawned) => p.lines().filter((l) => l.includes('"event":"accepted"'));

async function registered(b: InterceptBench): Promise<number[]> {
  const r = await b.accel(['status', '--cgroup', b.cg.path, '--json']);
  assert.equal(r.exitCode, 0, r.stderr);
  const st = JSON.parse(r.stdout) as { attachments: { intercept: { proxyRegistered: number[] | null } }[] };
  return st.attachments[0]?.intercept.proxyRegistered ?? [];
}

const TARGETS = [
  [SERVER4, ECHO_PORT],
  [SERVER6, ECHO_PORT],
  ['127.0.0.1', LOCAL_PORT],
  ['::1', LOCAL_PORT],
] as const;

describe('proxy identity: only the proxy’s registered listeners receive intercepted connections', () => {
  it('a listener of nobody on the proxy port while the proxy is down accepts nothing; remote and local connections are refused at once; a restarted proxy serves them again', async (t) => {
    const b = await interceptBench(t, { attach: false });
    // Remote destinations through the veth, local ones through lo.
    const a = await b.attach(['--iface', 'lo', '--intercept', `127.0.0.1/32:${LOCAL_PORT}`, '--intercept', `[::1/128]:${LOCAL_PORT}`]);
    assert.equal(a.exitCode, 0, a.stderr);
    const local = spawn(process.execPath, [path.join(FIXTURES, 'remote-server.mjs'), '--echo', String(LOCAL_PORT)], { netns: b.app });
    t.after(() => stopProcess(local));
    assert.ok(await local.waitForLine((l) => l.includes('"event":"listening"')));

    for (const [host, port] of TARGETS) assert.ok((await nodeClient(b, host, port, 4096)).ok, `${host}:${port} through the proxy`);
    assert.equal(b.proxyEvents().length, TARGETS.length, 'each went through the proxy');
    assert.deepEqual(await registered(b), [4, 6], 'the proxy registered a listener per family');

    await b.stopProxy('SIGKILL');
    assert.deepEqual(await registered(b), [], "the dead proxy's sockets left the map with it");
    const foreign = await foreignListener(t, b);

    for (const [host, port] of TARGETS) {
      const c = await nodeClient(b, host, port, 4096);
      assert.equal(c.ok, false, `${host}:${port} must not be served by the foreign listener`);
      assert.equal(c.error, 'ECONNREFUSED', `${host}:${port}: ${c.error}`);
      assert.ok(c.ms < 1000, `${host}:${port} failed at once (${c.ms} ms), not after a hang`);
    }
    const tp = b.tproxyCounters();
    assert.ok(tp.no_listener >= BigInt(TARGETS.length), `refused for want of a registered listener (${tp.no_listener})`);
    assert.ok(tp.foreign_listener >= BigInt(TARGETS.length), `and counted as a foreign listener on the port (${tp.foreign_listener})`);
    await sleep(300);
    assert.deepEqual(accepted(foreign), [], 'the foreign listener accepted nothing');

    // It does listen: what is addressed to it, not intercepted, reaches it.
    const direct = await run(process.execPath, [path.join(FIXTURES, 'node-client.mjs'), '127.0.0.1', String(PROXY_PORT), '16'], {
      netns: b.app,
      allowFailure: true,
      timeoutMs: 20_000,
    });
    assert.match(direct.stdout, /"ok":true/, `a direct connection to the foreign listener: ${direct.stdout}${direct.stderr}`);
    assert.equal(accepted(foreign).length, 1, 'only that one');

    await stopProcess(foreign);
    await b.startProxy();
    assert.deepEqual(await registered(b), [4, 6]);
    for (const [host, port] of TARGETS) assert.ok((await nodeClient(b, host, port, 64 * 1024)).ok, `${host}:${port} through the restarted proxy`);
    // A registered listener's accepted sockets still go on the fast path
    // (the proxy runs in the cgroup): the listener's own entry in a
    // SOCKHASH is not inherited by them.
    const f = b.fastCounters();
    assert.ok(f.sockets_inserted >= 2n * BigInt(TARGETS.length), `application <-> proxy hops on the fast path (${f.sockets_inserted} sockets inserted)`);
  });

  it('attach refuses a proxy port whose listener no accel proxy registered, and installs nothing', async (t) => {
    // The proxy outside the cgroup: its client sockets are off the fast
    // path, so it splices them.
    const b = await interceptBench(t, { proxy: false, attach: false, proxyInCgroup: false });
    const foreign = await foreignListener(t, b);
    const r = await b.attach();
    assert.equal(r.exitCode, 3, r.stderr);
    assert.match(
      r.stderr.trim().split('\n').pop() ?? '',
      /the listener on 127\.0\.0\.1:15001 \(held by process \d+ [^)]*\) is not an accel proxy's.*add --proxy-pid \d+ .*\[E_PROXY_NOT_REGISTERED\]/,
    );
    assert.equal(fs.existsSync(attachmentPinDir(BPFFS, b.cg.id)), false, 'nothing attached');
    assert.deepEqual(accepted(foreign), []);

    // With the proxy in its place, attach goes through, and the map is
    // the proxy's: registered under the application namespace.
    await stopProcess(foreign);
    await b.startProxy();
    const ok = await b.attach();
    assert.equal(ok.exitCode, 0, ok.stderr);
    const entries = readProxyListeners(BPFFS, (m) => m.entries().filter((e) => e.key.port === PROXY_PORT)) ?? [];
    assert.deepEqual(entries.map((e) => e.key.family).sort(), [4, 6]);
    assert.equal(new Set(entries.map((e) => e.key.netns)).size, 1, 'both listeners in one namespace');
    assert.ok((await nodeClient(b, SERVER4, ECHO_PORT, 1 << 20)).ok);
    assert.equal(b.proxyEvents().at(-1)?.mode, 'splice', 'a registered listener’s connection is spliced like any other');

    // The last user removes the map: the proxy is gone, so the detach (no
    // other interception left on this host), or else the last one's.
    await b.stopProxy();
    assert.ok(fs.existsSync(proxyListenersPin(BPFFS)), 'the attachment still uses the map');
    const d = await b.accel(['detach', '--cgroup', b.cg.path, '--drain-ms', '0']);
    assert.equal(d.exitCode, 0, d.stderr);
    const others = listAttachmentIds(BPFFS).filter((id) => fs.existsSync(path.join(attachmentPinDir(BPFFS, id), LO_INGRESS_PIN)));
    if (others.length === 0) assert.equal(fs.existsSync(proxyListenersPin(BPFFS)), false, 'the map went with its last user');
    else t.diagnostic(`interceptions of other cgroups (${others.join(', ')}) keep ${proxyListenersPin(BPFFS)}`);
  });
});
