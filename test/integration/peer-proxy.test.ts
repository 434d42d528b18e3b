// A transparent proxy that is not accel's (here socat with IP_TRANSPARENT,
// standing in for HAProxy or Envoy) receives intercepted connections once
// attach --proxy-pid registers its listener; without it attach refuses.
// A restarted proxy is registered again by attach; detach takes its
// registration out, and the node's map of proxy listeners goes with it.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { proxyListenersPin } from '../../src/paths.js';
import { type Spawned, run, spawn } from '../../src/proc/run.js';
import { BPFFS, CLI, stopProcess, waitFor } from '../helpers/env.js';
import { ECHO_PORT, type InterceptBench, PROXY_PORT, SERVER4, interceptBench, nodeClient } from '../helpers/intercept.js';
import { kernelLacks } from '../helpers/features.js';

/** socat's listener is up (it prints nothing): its LISTEN line in its netns. */
async function socatListens(p: Spawned): Promise<boolean> {
  const line = `:${PROXY_PORT.toString(16).toUpperCase()} 00000000:0000 0A`;
  return waitFor(() => {
    try {
      return fs.readFileSync(`/proc/${p.pid}/net/tcp`, 'utf8').includes(line);
    } catch {
      return false;
    }
  }, 5000);
}

function startSocat(b: InterceptBench): Spawned {
  // Outside the cgroup: its own upstream connection is not intercepted.
  return spawn('socat', [`TCP4-LISTEN:${PROXY_PORT},bind=127.0.0.1,reuseaddr,fork,transparent`, `TCP4:${SERVER4}:${ECHO_PORT}`], { netns: b.app });
}

describe('a transparent proxy that is not accel proxy', { skip: kernelLacks('intercept') }, () => {
  it('is refused until named with --proxy-pid, then receives the connections; a restart is registered again; detach takes the registration out', async (t) => {
    const b = await interceptBench(t, { proxy: false, attach: false });
    let socat = startSocat(b);
    t.after(() => stopProcess(socat));
    assert.ok(await socatListens(socat), 'socat listens');
    const args = ['attach', '--cgroup', b.cg.path, '--skip-selftest', '--iface', b.iface, '--intercept', `10.200.0.0/24:${ECHO_PORT}`, '--proxy-port', String(PROXY_PORT)];

    const refused = await b.accel(args);
    assert.equal(refused.exitCode, 3, refused.stderr);
    assert.match(refused.stderr.trim(), /not an accel proxy's.*\[E_PROXY_NOT_REGISTERED\]$/);
    assert.match(refused.stderr, new RegExp(`held by process ${socat.pid} .*--proxy-pid ${socat.pid} `), 'the message names the process and --proxy-pid');

    const r = await b.accel([...args, '--proxy-pid', String(socat.pid), '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual((JSON.parse(r.stdout) as { steps: string[] }).steps, ['install-fastpath', 'adopt-listeners', 'install-intercept']);
    const first = await nodeClient(b, SERVER4, ECHO_PORT, 64 * 1024);
    assert.ok(first.ok, JSON.stringify(first));
    assert.equal(b.tproxyCounters().connections_intercepted, 1n, 'the connection was steered to socat');

    // socat restarts: its new listener is not registered until attach runs again.
    await stopProcess(socat);
    socat = startSocat(b);
    assert.ok(await socatListens(socat), 'socat listens again');
    const again = await b.accel([...args, '--proxy-pid', String(socat.pid), '--json']);
    assert.equal(again.exitCode, 0, again.stderr);
    assert.deepEqual((JSON.parse(again.stdout) as { steps: string[] }).steps, ['fence-intercept', 'remove-intercept', 'adopt-listeners', 'install-intercept', 'unfence-intercept']);
    const second = await nodeClient(b, SERVER4, ECHO_PORT, 64 * 1024);
    assert.ok(second.ok, JSON.stringify(second));
    // The interception was made anew, and its counters with it.
    assert.equal(b.tproxyCounters().connections_intercepted, 1n);

    const d = await b.accel(['detach', '--cgroup', b.cg.path, '--drain-ms', '0']);
    assert.equal(d.exitCode, 0, d.stderr);
    assert.equal(fs.existsSync(proxyListenersPin(BPFFS)), false, 'the registration was taken out and the map removed, though socat still runs');
  });

  it('killed while registering the proxy again, or after registering it in a fresh attach, the next command converges and detach leaves nothing', async (t) => {
    const b = await interceptBench(t, { proxy: false, attach: false });
    const socat = startSocat(b);
    t.after(() => stopProcess(socat));
    assert.ok(await socatListens(socat), 'socat listens');
    const args = [
      'attach',
      '--cgroup',
      b.cg.path,
      '--skip-selftest',
      '--iface',
      b.iface,
      '--intercept',
      `10.200.0.0/24:${ECHO_PORT}`,
      '--proxy-port',
      String(PROXY_PORT),
      '--proxy-pid',
      String(socat.pid),
    ];
    const killedAt = async (point: string, cmd: string[]) => {
      const r = await run(process.execPath, [CLI, ...cmd], { netns: b.app, allowFailure: true, env: { ...process.env, ACCEL_FAILPOINT: point } as Record<string, string> });
      assert.notEqual(r.exitCode, 0, `killed at ${point}`);
      assert.doesNotMatch(r.stderr, /\[E_[A-Z_]+\]/, `${point}: killed, not failed`);
    };
    for (const point of ['before:register-proxy', 'after:register-proxy']) {
      assert.equal((await b.accel(args)).exitCode, 0);
      await killedAt(point, args);
      const again = await b.accel(args);
      assert.equal(again.exitCode, 0, `${point}: ${again.stderr}`);
      const c = await nodeClient(b, SERVER4, ECHO_PORT, 4096);
      assert.ok(c.ok, `${point}: ${JSON.stringify(c)}`);
      const d = await b.accel(['detach', '--cgroup', b.cg.path, '--drain-ms', '0']);
      assert.equal(d.exitCode, 0, d.stderr);
      assert.equal(fs.existsSync(proxyListenersPin(BPFFS)), false, `${point}: nothing left registered`);
    }
    // A fresh attach killed once the listener is registered: detach alone
    // takes the registration out (the record named the proxy first).
    await killedAt('intercept-after-programs', args);
    const d = await b.accel(['detach', '--cgroup', b.cg.path, '--drain-ms', '0']);
    assert.equal(d.exitCode, 0, d.stderr);
    assert.equal(fs.existsSync(proxyListenersPin(BPFFS)), false, 'nothing left registered after a crash in install-intercept');
  });
});
