// Interception fails closed: what the tc program cannot parse never gets
// past the proxy, devices it cannot work on are refused, flows live exactly
// as long as their connections, and a proxy mark that does not match is
// refused, and cannot make the proxy loop into itself either. In the namespaces of
// scripts/setup-netns.sh, through test/helpers/intercept.ts.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { mapInfo, withPinned } from '../../src/bpf/fd.js';
import { CONNRATE, attachmentPinDir, interceptRecordPath, proxyRecordPath } from '../../src/paths.js';
import { run, spawn } from '../../src/proc/run.js';
import { BPFFS, CLI, stopProcess, waitFor } from '../helpers/env.js';
import { ECHO_PORT, FIXTURES, OTHER_PORT, PROXY_PORT, SERVER4, SERVER6, type InterceptBench, interceptBench, nodeClient } from '../helpers/intercept.js';

interface PyResult {
  ok: boolean;
  error: string | null;
  received: number;
}

/** test/fixtures/ipopt-client.py in the application's place. */
async function pyClient(b: InterceptBench, host: string, port: number, mode: 'plain' | 'ip-options' | 'dstopts' | 'rthdr', timeoutS = 3): Promise<PyResult> {
  const r = await run('python3', [path.join(FIXTURES, 'ipopt-client.py'), host, String(port), mode, String(timeoutS)], { ...b.appWhere, allowFailure: true, timeoutMs: 30_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return line.startsWith('{') ? (JSON.parse(line) as PyResult) : { ok: false, error: r.stderr || `exit ${r.exitCode}`, received: 0 };
}

async function status(b: InterceptBench): Promise<{ flows: number; settings: { maxFlows: number } }> {
  const r = await b.accel(['status', '--cgroup', b.cg.path, '--json']);
  assert.equal(r.exitCode, 0, r.stderr);
  const a = (JSON.parse(r.stdout) as { attachments: { intercept: { flows: number; settings: { maxFlows: number } } }[] }).attachments[0];
  assert.ok(a, 'attached');
  return a.intercept;
}

function heldClient(b: InterceptBench, t: { after: (fn: () => Promise<void>) => void }) {
  const held = spawn(process.execPath, [path.join(FIXTURES, 'held-client.mjs'), SERVER4, String(ECHO_PORT)], b.appWhere);
  t.after(() => stopProcess(held));
  return held;
}

const accepted = (b: InterceptBench, port: number) => b.serverAccepts().filter((a) => a.local.endsWith(`:${port}`)).length;

describe('interception fails closed', () => {
  it('a SYN with IPv4 options or IPv6 destination options is steered like any other; one behind a routing header is dropped and counted, never let past the proxy', async (t) => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-failclosed-'));
    t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
    const policy = path.join(tmp, 'policy.json');
    fs.writeFileSync(policy, JSON.stringify({ default: 'allow', rules: [{ action: 'deny', destination: `${SERVER4}/32`, ports: ECHO_PORT, name: 'no echo' }] }));
    const b = await interceptBench(t, { proxyArgs: ['--policy', policy], attach: false });
    // The server accepts segment routing headers: a routed SYN that got out
    // would be answered.
    const remoteIface = b.iface.replace(/a0$/, 'r0');
    for (const key of ['all', remoteIface]) await run('ip', ['netns', 'exec', b.remote, 'sysctl', '-qw', `net.ipv6.conf.${key}.seg6_enabled=1`]);

    // Without interception every one of these clients reaches the server.
    for (const [host, mode] of [
      [SERVER4, 'plain'],
      [SERVER4, 'ip-options'],
      [SERVER6, 'dstopts'],
      [SERVER6, 'rthdr'],
    ] as const) {
      const c = await pyClient(b, host, ECHO_PORT, mode);
      assert.ok(c.ok, `${mode} to ${host} before attach: ${JSON.stringify(c)}`);
    }
    assert.equal(accepted(b, ECHO_PORT), 4);
    const a = await b.attach();
    assert.equal(a.exitCode, 0, a.stderr);

    // Denied by the proxy's policy, with or without IP options.
    for (const mode of ['plain', 'ip-options'] as const) {
      const c = await pyClient(b, SERVER4, ECHO_PORT, mode);
      assert.equal(c.ok, false, mode);
      assert.match(c.error ?? '', /ECONNRESET|EPIPE/, `${mode}: ${JSON.stringify(c)}`);
    }
    assert.equal(accepted(b, ECHO_PORT), 4, 'nothing new reached the denied server');
    assert.deepEqual(
      b.proxyEvents().map((e) => [e.action, e.destination]),
      [
        ['deny', `${SERVER4}:${ECHO_PORT}`],
        ['deny', `${SERVER4}:${ECHO_PORT}`],
      ],
    );
    // IPv6 destination options: steered, allowed, echoed through the proxy.
    const d = await pyClient(b, SERVER6, ECHO_PORT, 'dstopts');
    assert.ok(d.ok, JSON.stringify(d));
    assert.equal(b.proxyEvents().at(-1)?.destination, `[${SERVER6}]:${ECHO_PORT}`);
    // Behind a routing header the destination cannot be matched: dropped,
    // to an intercepted port or not.
    for (const port of [ECHO_PORT, OTHER_PORT]) {
      const r = await pyClient(b, SERVER6, port, 'rthdr', 2);
      assert.equal(r.error, 'ETIMEDOUT', `rthdr to ${port}: ${JSON.stringify(r)}`);
    }
    assert.equal(b.proxyEvents().length, 3, 'the proxy saw no routed connection');
    assert.equal(accepted(b, ECHO_PORT), 5, 'only the allowed IPv6 connection (from the proxy) reached the server');
    assert.equal(accepted(b, OTHER_PORT), 0);
    // IP options to a port no rule covers: untouched, as before.
    assert.ok((await pyClient(b, SERVER4, OTHER_PORT, 'ip-options')).ok);
    assert.equal(accepted(b, OTHER_PORT), 1);

    const c = b.tproxyCounters();
    assert.equal(c.connections_intercepted, 3n);
    assert.equal(c.syn_ip_options, 2n, 'the SYNs with IPv4 options and IPv6 destination options');
    assert.ok(c.unparsed_dropped >= 2n, `routed SYNs dropped (${c.unparsed_dropped}, retransmissions included)`);
  });

  it('attach --iface on a device without an Ethernet header (tun) is refused with one line, and nothing is installed', async (t) => {
    const b = await interceptBench(t, { attach: false });
    const tun = `${b.iface.slice(0, 8)}t0`;
    // Made in the test namespace: it goes with it.
    await run('ip', ['-n', b.app, 'tuntap', 'add', 'mode', 'tun', 'name', tun]);
    await run('ip', ['-n', b.app, 'link', 'set', tun, 'up']);
    for (const ifaces of [[tun], [b.iface, tun]]) {
      const r = await b.accel([
        'attach',
        '--cgroup',
        b.cg.path,
        '--skip-selftest',
        ...ifaces.flatMap((i) => ['--iface', i]),
        '--intercept',
        `10.200.0.0/24:${ECHO_PORT}`,
        '--proxy-port',
        String(PROXY_PORT),
      ]);
      assert.equal(r.exitCode, 2, r.stderr);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
      assert.match(r.stderr, new RegExp(`interface ${tun} has no Ethernet header \\(link type none\\).*\\[E_USAGE\\]`));
    }
    assert.equal(fs.existsSync(attachmentPinDir(BPFFS, b.cg.id)), false);
    assert.equal(fs.existsSync(interceptRecordPath(b.cg.id)), false);
    assert.doesNotMatch((await run('ip', ['rule', 'show'], { netns: b.app })).stdout, /2764/);
  });
});

describe('interception flows live as long as their connections', () => {
  it('an idle intercepted connection survives 20,000 short ones, and the flow count comes back to the live connections', async (t) => {
    // Relayed in user space: the quickest per connection.
    const b = await interceptBench(t, { attach: false, proxyArgs: ['--no-splice'] });
    // Each short connection leaves two TIME_WAIT sockets on the same address
    // pair (the client's, the proxy's upstream): room for both, and their
    // ports used again, or every connect() searches longer for a free one.
    for (const setting of ['net.ipv4.ip_local_port_range=10000 65000', 'net.ipv4.tcp_tw_reuse=1']) {
      await run('ip', ['netns', 'exec', b.app, 'sysctl', '-qw', setting]);
    }
    const a = await b.attach();
    assert.equal(a.exitCode, 0, a.stderr);
    const held = heldClient(b, t);
    assert.ok(await held.waitForLine((l) => l.includes('"stage":"first"')), 'the idle connection was echoed once');
    assert.equal((await status(b)).flows, 1);

    // connrate (native/connrate.c): one connection after another, each
    // connect, a byte each way, close; in C, so that the proxy sets the pace.
    const total = 20_000;
    const started = Date.now();
    const churn = await run(CONNRATE, ['client', '--host', SERVER4, '--port', String(ECHO_PORT), '--seconds', '100', '--max', String(total)], {
      ...b.appWhere,
      allowFailure: true,
      timeoutMs: 120_000,
    });
    const m = JSON.parse(churn.stdout.trim().split('\n').pop() ?? '{}') as { connections: number; failures: number };
    assert.deepEqual([m.connections, m.failures], [total, 0], churn.stdout + churn.stderr);
    t.diagnostic(`${total} connections through the proxy in ${Date.now() - started} ms`);

    // Every short connection's flow went when its socket closed.
    assert.ok(await waitFor(() => b.tproxyCounters().flows_closed >= BigInt(total), 5000), `flows closed: ${b.tproxyCounters().flows_closed}`);
    assert.equal((await status(b)).flows, 1, 'only the idle connection is steered');
    const c = b.tproxyCounters();
    assert.equal(c.connections_intercepted, BigInt(total + 1));
    assert.equal(c.flows_full, 0n);

    // The idle connection still goes through the proxy: its flow was kept
    // (lost, its packets would go to the server, which would reset them).
    held.write('go\n');
    const done = await held.done;
    assert.match(done.stdout, /"ok":true/, done.stdout + done.stderr);
    assert.equal(accepted(b, ECHO_PORT), total + 1, 'every connection reached the server from the proxy, none directly');
    assert.ok(await waitFor(() => b.tproxyCounters().flows_closed === BigInt(total + 1), 5000));
    assert.equal((await status(b)).flows, 0);
  });

  it('--max-flows sizes the flow map; a full map refuses new connections and keeps the live ones; a new size makes the interception anew', async (t) => {
    const b = await interceptBench(t, { attachArgs: ['--max-flows', '2'] });
    const flowsMapSize = () => withPinned(path.join(attachmentPinDir(BPFFS, b.cg.id), 'accel_tproxy_flows'), (fd) => mapInfo(fd).maxEntries);
    assert.equal(flowsMapSize(), 2);
    assert.equal((await status(b)).settings.maxFlows, 2);
    const held = [heldClient(b, t), heldClient(b, t)];
    for (const h of held) assert.ok(await h.waitForLine((l) => l.includes('"stage":"first"')));
    assert.equal((await status(b)).flows, 2);

    // A third: its SYN is dropped (the client would retry until one frees).
    const third = await pyClient(b, SERVER4, ECHO_PORT, 'plain', 2);
    assert.equal(third.error, 'ETIMEDOUT', JSON.stringify(third));
    assert.ok(b.tproxyCounters().flows_full >= 1n);
    assert.equal(accepted(b, ECHO_PORT), 2, 'the refused connection went nowhere');

    // The live ones were not broken; once one ends, a new one fits.
    held[0]?.write('go\n');
    assert.match((await held[0]?.done)?.stdout ?? '', /"ok":true/);
    assert.ok(await waitFor(() => b.tproxyCounters().flows_closed >= 1n, 5000));
    assert.ok((await nodeClient(b, SERVER4, ECHO_PORT, 4096)).ok, 'a new connection once a flow is free');
    held[1]?.write('go\n');
    assert.match((await held[1]?.done)?.stdout ?? '', /"ok":true/);

    // The map's size is fixed when it is made: a new one, with the interception.
    const r = await b.attach(['--max-flows', '5', '--json']);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual((JSON.parse(r.stdout) as { steps: string[] }).steps, ['fence-intercept', 'remove-intercept', 'adopt-listeners', 'install-intercept', 'unfence-intercept']);
    assert.equal(flowsMapSize(), 5);
    assert.ok((await nodeClient(b, SERVER4, ECHO_PORT, 4096)).ok);
  });
});

describe('a proxy mark that does not match', () => {
  it('is refused by attach (against the running proxy) and by the proxy at start (against the interception)', async (t) => {
    const b = await interceptBench(t, { proxyArgs: ['--mark', '0x1234'], attach: false });
    const r = await b.attach();
    assert.equal(r.exitCode, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    assert.match(r.stderr, /marks its upstream connections 0x1234, not --proxy-mark 0xacc0002.*\[E_USAGE\]/);
    assert.equal(fs.existsSync(attachmentPinDir(BPFFS, b.cg.id)), false, 'nothing attached');
    assert.equal(fs.existsSync(interceptRecordPath(b.cg.id)), false);

    const ok = await b.attach(['--proxy-mark', '0x1234']);
    assert.equal(ok.exitCode, 0, ok.stderr);
    assert.ok((await nodeClient(b, SERVER4, ECHO_PORT, 4096)).ok);
    assert.equal(b.tproxyCounters().connections_intercepted, 1n, "the proxy's upstream connection was not steered");

    await b.stopProxy();
    const other = await run(process.execPath, [CLI, 'proxy', '--port', String(PROXY_PORT), '--mark', '0x4321'], {
      netns: b.app,
      cgroupProcs: b.cg.procs,
      allowFailure: true,
      timeoutMs: 15_000,
    });
    assert.equal(other.exitCode, 2, other.stderr);
    assert.match(other.stderr.trim(), /skips upstream connections marked 0x1234, not --mark 0x4321.*\[E_USAGE\]$/);
  });

  it("that neither side could see (no proxy record) makes no loop: the proxy's upstream is known by the record on its socket, not by its mark", async (t) => {
    const b = await interceptBench(t, { attach: false });
    // As if the proxy ran with another /run: attach cannot know its mark.
    const netns = fs.statSync(`/run/netns/${b.app}`).ino;
    fs.rmSync(proxyRecordPath(netns, PROXY_PORT));
    const a = await b.attach(['--proxy-mark', '0x999']);
    assert.equal(a.exitCode, 0, a.stderr);

    const c = await nodeClient(b, SERVER4, ECHO_PORT, 1024);
    assert.ok(c.ok, JSON.stringify(c));
    const events = b.proxyEvents();
    assert.equal(events.filter((e) => /loop/.test(e.reason)).length, 0, 'no loop');
    const counters = b.tproxyCounters();
    assert.equal(counters.connections_intercepted, 1n, 'the client only');
    assert.equal(counters.proxy_packets_skipped, 1n, "the proxy's own SYN (from the cgroup) was recognised");
    assert.equal(accepted(b, ECHO_PORT), 1, 'the server got the one connection, from the proxy');
  });
});
