// Transparent interception end to end, in the namespaces of
// scripts/setup-netns.sh: unmodified clients in the application's cgroup
// reach the remote server at its real address through accel proxy.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { cgroup2Root, createChildCgroup, procsFile, removeCgroup } from '../../src/cgroup/cgroup.js';
import { withPinnedMaps } from '../../src/bpf/fd.js';
import { keys, lookup, u32 } from '../../src/bpf/map.js';
import { SockKeyLayout } from '../../src/maps/layout/shared.js';
import { SlotNames, TproxyMapNames } from '../../src/maps/tproxy.js';
import { attachmentPinDir } from '../../src/paths.js';
import { interceptRecordPath as statePath } from '../../src/paths.js';
import { runSplit } from '../../src/probe/sockprobe.js';
import { run, spawn } from '../../src/proc/run.js';
import { BPFFS, CLI, MB, fastPathBytes, stopProcess, waitFor } from '../helpers/env.js';
import { kernelLacks, requireFeature } from '../helpers/features.js';
import { ECHO_PORT, FIXTURES, HTTP_PORT, OTHER_PORT, PROBE_PORT, PROXY_PORT, SERVER4, SERVER6, curl, echoDiagnosis, interceptBench, nodeClient } from '../helpers/intercept.js';

function pattern(n: number): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + (i >> 8)) & 0xff;
  return out;
}

const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

describe('transparent interception', { skip: kernelLacks('intercept') }, () => {
  it('curl and a Node.js client reach the server at its real address (IPv4, IPv6) through the proxy, which logs the original destination', async (t) => {
    const b = await interceptBench(t);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-curl-'));
    t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
    for (const [host, url] of [
      [SERVER4, `http://${SERVER4}:${HTTP_PORT}`],
      [SERVER6, `http://[${SERVER6}]:${HTTP_PORT}`],
    ] as const) {
      // GET: 1 byte and 64 KB down; POST: 64 KB up.
      for (const n of [1, 64 * 1024]) {
        const out = path.join(tmp, `get-${n}`);
        const r = await curl(b, `${url}/data/${n}`, ['-o', out]);
        assert.equal(r.exitCode, 0, `curl ${url}: ${r.stderr}`);
        assert.equal(sha(fs.readFileSync(out)), sha(pattern(n)), `${url}/data/${n} byte-exact`);
      }
      const body = path.join(tmp, 'body');
      const payload = crypto.randomBytes(64 * 1024);
      fs.writeFileSync(body, payload);
      const post = await curl(b, `${url}/sha256`, ['--data-binary', `@${body}`]);
      assert.equal(post.stdout.trim(), `${payload.length} ${sha(payload)}`);
      // The Node.js client: echo of 1 byte and 64 KB.
      for (const n of [1, 64 * 1024]) {
        const c = await nodeClient(b, host, ECHO_PORT, n);
        assert.ok(c.ok, `node client ${host} ${n} B: ${c.error ?? JSON.stringify(c)}`);
      }
      const dest = host.includes(':') ? `[${host}]:${HTTP_PORT}` : `${host}:${HTTP_PORT}`;
      assert.ok(
        b.proxyEvents().some((e) => e.action === 'allow' && e.destination === dest),
        `the proxy logged ${dest}: ${JSON.stringify(b.proxyEvents().map((e) => e.destination))}`,
      );
    }
    // The server only ever saw the proxy's upstream connections, from the
    // application namespace's own address.
    const accepts = b.serverAccepts();
    assert.ok(accepts.length >= 10);
    const c = b.tproxyCounters();
    assert.equal(c.connections_intercepted, BigInt(accepts.length), 'one steered SYN per client connection');
    assert.equal(c.assign_failed, 0n);
    assert.ok(c.assigned_listener >= BigInt(accepts.length));
  });

  it('carries 32 MB byte-exact in both directions at once, and 32 MB up then down (IPv4 and IPv6)', async (t) => {
    const b = await interceptBench(t);
    for (const host of [SERVER4, SERVER6]) {
      const c = await nodeClient(b, host, ECHO_PORT, 32 * MB);
      assert.ok(c.ok, `node echo ${host}: ${c.error ?? JSON.stringify(c)}; ${echoDiagnosis(b)}`);
      assert.equal(c.received, 32 * MB);
    }
    // sockprobe: verified stream up, then a verified reply after the half-close.
    const r = await runSplit({
      server: ['--family', '6', '--bytes', String(32 * MB), '--back', String(32 * MB), '--port', String(PROBE_PORT)],
      client: ['--bytes', String(32 * MB), '--back', String(32 * MB), '--sizes', 'mix', '--reader', 'poll'],
      serverWhere: { netns: b.remote },
      clientWhere: b.appWhere,
      host: SERVER4,
    }).catch((e: unknown) => ({ ok: false, error: String(e), sides: [] }));
    assert.ok(r.ok, r.error ?? '');
    assert.ok(
      b.proxyEvents().some((e) => e.destination === `${SERVER4}:${PROBE_PORT}`),
      'through the proxy',
    );
  });

  it('leaves destinations no rule matches alone (the proxy sees nothing) and refuses denied ones', async (t) => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-policy-'));
    t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
    const policy = path.join(tmp, 'policy.json');
    fs.writeFileSync(policy, JSON.stringify({ default: 'allow', rules: [{ action: 'deny', destination: `${SERVER4}/32`, ports: ECHO_PORT, name: 'no echo' }] }));
    const b = await interceptBench(t, { proxyArgs: ['--policy', policy] });

    const direct = await nodeClient(b, SERVER4, OTHER_PORT, 64 * 1024);
    assert.ok(direct.ok, `not intercepted port: ${direct.error}`);
    assert.equal(b.proxyEvents().length, 0, 'the proxy saw no connection');
    assert.equal(b.tproxyCounters().connections_intercepted, 0n);
    assert.equal(b.serverAccepts()[0]?.local.endsWith(`:${OTHER_PORT}`), true);

    const denied = await nodeClient(b, SERVER4, ECHO_PORT, 1024);
    assert.equal(denied.ok, false);
    assert.match(denied.error ?? '', /ECONNRESET|EPIPE/);
    const ev = b.proxyEvents();
    assert.equal(ev.length, 1);
    assert.equal(ev[0]?.action, 'deny');
    assert.match(ev[0]?.reason ?? '', /no echo/);
    assert.ok(!b.serverAccepts().some((a) => a.local.endsWith(`:${ECHO_PORT}`)), 'nothing reached the denied server');

    // IPv6 and the HTTP port stay allowed.
    assert.ok((await nodeClient(b, SERVER6, ECHO_PORT, 1024)).ok);
  });

  it("never intercepts the proxy's own upstream connection (no loop)", async (t) => {
    const b = await interceptBench(t);
    const n = 5;
    for (let i = 0; i < n; i++) assert.ok((await nodeClient(b, SERVER4, ECHO_PORT, 4096)).ok);
    const c = b.tproxyCounters();
    assert.equal(c.connections_intercepted, BigInt(n), 'only the clients were steered');
    assert.ok(c.proxy_packets_skipped >= BigInt(n), `the proxy's SYNs were seen and skipped (${c.proxy_packets_skipped})`);
    const ev = b.proxyEvents();
    assert.equal(ev.length, n, 'the proxy accepted each client once, never its own upstream');
    assert.ok(ev.every((e) => e.source.startsWith('10.200.0.1:')));
    assert.equal(b.serverAccepts().length, n);
  });

  it('puts the application <-> proxy hop on the fast path when the proxy runs in the cgroup', async (t) => {
    // Without the shortcut: with it, the application's bytes would go
    // straight out on the proxy's upstream socket (shortcut-egress.test.ts),
    // not over this hop.
    const b = await interceptBench(t, { proxyArgs: ['--no-shortcut'] });
    const c = await nodeClient(b, SERVER4, ECHO_PORT, 8 * MB);
    assert.ok(c.ok, c.error);
    const f = b.fastCounters();
    assert.ok(f.sockets_inserted >= 2n, `both ends of the hop inserted (${f.sockets_inserted})`);
    assert.ok(fastPathBytes(f) >= BigInt(16 * MB), `${f.bytes_redirected} bytes redirected between application and proxy, ${f.bytes_held} held back`);
    assert.equal(f.connections_tcp_only, 0n);
  });

  it("keeps its maps out of the fast path's: made with the interception, reached by sockops through the slots, gone with it while the fast path stays", async (t) => {
    const b = await interceptBench(t);
    const dir = attachmentPinDir(BPFFS, b.cg.id);
    const interceptMaps = Object.values(TproxyMapNames);
    const pinned = () => new Set(fs.readdirSync(dir));
    assert.deepEqual(
      interceptMaps.filter((m) => !pinned().has(m)),
      [],
      'the interception made its maps',
    );
    // sockops moves a closed flow to accel_tproxy_closed and counts it,
    // both reached through their slots.
    assert.ok((await nodeClient(b, SERVER4, ECHO_PORT, 4096)).ok);
    assert.ok(await waitFor(() => b.tproxyCounters().flows_closed >= 1n, 5000), `flows closed: ${b.tproxyCounters().flows_closed}`);
    const closed = withPinnedMaps(dir, [TproxyMapNames.closed], (need) => keys(need(TproxyMapNames.closed), SockKeyLayout.size).length);
    assert.ok(closed >= 1, `closed flows: ${closed}`);
    const slotted = () => withPinnedMaps(dir, Object.values(SlotNames), (need) => Object.values(SlotNames).filter((s) => lookup(need(s), u32(0), 4) !== null));
    assert.deepEqual(slotted().sort(), Object.values(SlotNames).sort(), 'every slot holds its map');

    // The same fast path without interception: it stays, the interception goes.
    const linkIno = fs.statSync(path.join(dir, 'link_sockops')).ino;
    const a = await b.accel(['attach', '--cgroup', b.cg.path, '--skip-selftest']);
    assert.equal(a.exitCode, 0, a.stderr);
    assert.equal(fs.statSync(path.join(dir, 'link_sockops')).ino, linkIno, 'the fast path stayed');
    assert.deepEqual(
      interceptMaps.filter((m) => pinned().has(m)),
      [],
      "no interception map is left in the fast path's directory",
    );
    assert.deepEqual(slotted(), [], 'every slot is empty');
    const direct = await nodeClient(b, SERVER4, ECHO_PORT, 4096);
    assert.ok(direct.ok, direct.error);
  });

  it('intercepts connections to a local address (--iface lo), and both hops go on the fast path with everything in the cgroup', async (t) => {
    // Without the shortcut, which would take the proxy's two hops out of
    // the data path (shortcut.test.ts).
    const b = await interceptBench(t, { attach: false, proxyArgs: ['--no-shortcut'] });
    const LOCAL_PORT = 7411;
    const a = await b.accel([
      'attach',
      '--cgroup',
      b.cg.path,
      '--skip-selftest',
      '--iface',
      'lo',
      '--intercept',
      `127.0.0.1/32:${LOCAL_PORT}`,
      '--intercept',
      `[::1/128]:${LOCAL_PORT}`,
      '--proxy-port',
      String(PROXY_PORT),
    ]);
    assert.equal(a.exitCode, 0, a.stderr);
    // A local server in the cgroup, started after attach so its listener is known.
    const local = spawn(process.execPath, [path.join(FIXTURES, 'remote-server.mjs'), '--echo', String(LOCAL_PORT)], b.appWhere);
    t.after(() => stopProcess(local));
    assert.ok(await local.waitForLine((l) => l.includes('"event":"listening"')));
    for (const host of ['127.0.0.1', '::1']) {
      const c = await nodeClient(b, host, LOCAL_PORT, 8 * MB);
      assert.ok(c.ok, `${host}: ${c.error ?? JSON.stringify(c)}; ${echoDiagnosis(b, local)}`);
    }
    assert.deepEqual(
      b.proxyEvents().map((e) => e.destination),
      [`127.0.0.1:${LOCAL_PORT}`, `[::1]:${LOCAL_PORT}`],
    );
    const tp = b.tproxyCounters();
    assert.equal(tp.connections_intercepted, 2n);
    assert.equal(tp.assign_failed, 0n);
    // App <-> proxy and proxy <-> server, both ways, for each 8 MB echo.
    const f = b.fastCounters();
    assert.ok(f.sockets_inserted >= 8n, `both ends of both hops inserted (${f.sockets_inserted})`);
    assert.ok(fastPathBytes(f) >= BigInt(2 * 4 * 8 * MB), `${f.bytes_redirected} bytes redirected, ${f.bytes_held} held back`);
  });

  for (const mode of ['tcx', 'tc'] as const) {
    it(`detach removes rules, routes, hooks (${mode}), pins and the record, leaves the host state it found, and traffic flows directly again`, async (t) => {
      if (mode === 'tcx' && !requireFeature(t, 'tcx links')) return;
      const saved = process.env.ACCEL_TC_MODE;
      process.env.ACCEL_TC_MODE = mode;
      t.after(() => {
        if (saved === undefined) delete process.env.ACCEL_TC_MODE;
        else process.env.ACCEL_TC_MODE = saved;
      });
      const b = await interceptBench(t, { attach: false });
      // Host state that must survive: a rule, a clsact qdisc with a filter.
      const inApp = (cmd: string, args: string[]) => run(cmd, args, { netns: b.app, allowFailure: true });
      await inApp('ip', ['rule', 'add', 'pref', '100', 'fwmark', '0x77', 'lookup', '77']);
      await inApp('tc', ['qdisc', 'add', 'dev', b.iface, 'clsact']);
      // A classic-BPF filter that matches nothing (only cls_bpf is in this kernel).
      await inApp('tc', ['filter', 'add', 'dev', b.iface, 'egress', 'pref', '10', 'bpf', 'bytecode', '1,6 0 0 0,']);
      const snapshot = async () => ({
        rules4: (await inApp('ip', ['-4', 'rule', 'show'])).stdout,
        rules6: (await inApp('ip', ['-6', 'rule', 'show'])).stdout,
        qdiscIface: (await inApp('tc', ['qdisc', 'show', 'dev', b.iface])).stdout,
        qdiscLo: (await inApp('tc', ['qdisc', 'show', 'dev', 'lo'])).stdout,
        filters: (await inApp('tc', ['filter', 'show', 'dev', b.iface, 'egress'])).stdout,
        table: (await inApp('ip', ['route', 'show', 'table', '2764'])).stdout,
        acceptLocal: (await inApp('cat', ['/proc/sys/net/ipv4/conf/lo/accept_local'])).stdout,
      });
      const before = await snapshot();

      const a = await b.attach();
      assert.equal(a.exitCode, 0, a.stderr);
      assert.ok((await nodeClient(b, SERVER4, ECHO_PORT, 4096)).ok);
      assert.equal(b.proxyEvents().length, 1);
      // tc: the host's filter at priority 10 ran before ours and let it
      // through. tcx: ours runs first, and the host's filter stays.
      const during = await snapshot();
      assert.match(during.filters, /bytecode/);
      if (mode === 'tc') assert.match(during.filters, /accel_tc_egress/);
      else assert.doesNotMatch(during.filters, /accel_tc_egress/, 'a tcx link, not a tc filter');
      const st = JSON.parse((await b.accel(['status', '--cgroup', b.cg.path, '--json'])).stdout) as { attachments: { intercept: { hookMode: string; filtersPresent: boolean } }[] };
      assert.deepEqual([st.attachments[0]?.intercept.hookMode, st.attachments[0]?.intercept.filtersPresent], [mode, true]);
      assert.match(during.rules4, /fwmark 0xacc0001 lookup 2764/);

      const d = await b.accel(['detach', '--cgroup', b.cg.path, '--drain-ms', '0']);
      assert.equal(d.exitCode, 0, d.stderr);
      assert.deepEqual(await snapshot(), before, 'routing, tc and sysctl are as before');
      assert.equal(fs.existsSync(attachmentPinDir(BPFFS, b.cg.id)), false, 'pins gone');
      assert.equal(fs.existsSync(statePath(b.cg.id)), false, 'record gone');

      assert.ok((await nodeClient(b, SERVER4, ECHO_PORT, 4096)).ok, 'direct connection after detach');
      assert.equal(b.proxyEvents().length, 1, 'the proxy saw nothing new');
      assert.ok(b.serverAccepts().at(-1)?.remote.endsWith('10.200.0.1'));
    });
  }

  it('attach again with new rules changes them in place: a live intercepted connection keeps going through the proxy, new ones follow the new rules', async (t) => {
    const b = await interceptBench(t);
    const held = spawn(process.execPath, [path.join(FIXTURES, 'held-client.mjs'), SERVER4, String(ECHO_PORT)], b.appWhere);
    t.after(() => stopProcess(held));
    assert.ok(await held.waitForLine((l) => l.includes('"stage":"first"')), 'the first line was echoed');
    assert.ok(await waitFor(() => b.proxyEvents().length === 1, 5000), 'the held connection was intercepted');
    const flowsBefore = (JSON.parse((await b.accel(['status', '--cgroup', b.cg.path, '--json'])).stdout) as { attachments: { intercept: { flows: number } }[] }).attachments[0]
      ?.intercept.flows;
    // ECHO_PORT is no longer covered by the new rules.
    const r = await b.accel([
      'attach',
      '--cgroup',
      b.cg.path,
      '--skip-selftest',
      '--iface',
      b.iface,
      '--proxy-port',
      String(PROXY_PORT),
      '--intercept',
      `10.200.0.0/24:${HTTP_PORT}`,
      '--intercept',
      `[fd00:200::/64]:${HTTP_PORT}`,
      '--json',
    ]);
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual((JSON.parse(r.stdout) as { steps: string[] }).steps, ['adopt-listeners', 'configure-intercept']);
    const st = JSON.parse((await b.accel(['status', '--cgroup', b.cg.path, '--json'])).stdout) as {
      attachments: { intercept: { flows: number; settings: { rules: { text: string }[] } } }[];
    };
    assert.deepEqual(
      st.attachments[0]?.intercept.settings.rules.map((x) => x.text),
      [`10.200.0.0/24:${HTTP_PORT}`, `[fd00:200::/64]:${HTTP_PORT}`],
    );
    assert.equal(st.attachments[0]?.intercept.flows, flowsBefore, 'the live flow was kept');
    held.write('go\n');
    const done = await held.done;
    // Its flow lost, its packets would have gone to the server directly,
    // which knows no such connection: a reset, not this echo.
    assert.match(done.stdout, /"ok":true/, done.stdout + done.stderr);
    assert.ok((await nodeClient(b, SERVER4, ECHO_PORT, 4096)).ok);
    assert.equal(b.proxyEvents().length, 1, 'a new connection to the port the rules no longer cover went direct');
    assert.ok(b.serverAccepts().at(-1)?.remote.endsWith('10.200.0.1'));
  });

  it('two cgroups intercepted in one namespace share the ip rule and route: detaching the first hands them to the second, which keeps working', async (t) => {
    const b = await interceptBench(t);
    const second = createChildCgroup(cgroup2Root(), 'accel-ic2');
    t.after(async () => {
      await b.accel(['detach', '--cgroup', second.path, '--drain-ms', '0']);
      // If the bench's namespace went first, detach from here removes what is left.
      await run(process.execPath, [CLI, 'detach', '--cgroup', second.path, '--drain-ms', '0'], { allowFailure: true });
      await removeCgroup(second);
    });
    const viaSecond = { ...b, appWhere: { netns: b.app, cgroupProcs: procsFile(second) } };
    const r = await b.accel([
      'attach',
      '--cgroup',
      second.path,
      '--skip-selftest',
      '--iface',
      b.iface,
      '--intercept',
      `10.200.0.0/24:${ECHO_PORT}`,
      '--proxy-port',
      String(PROXY_PORT),
    ]);
    assert.equal(r.exitCode, 0, r.stderr);
    const rules = async () => (await run('ip', ['rule', 'show'], { netns: b.app })).stdout;
    const acceptLocal = async () => (await run('cat', ['/proc/sys/net/ipv4/conf/lo/accept_local'], { netns: b.app })).stdout.trim();
    assert.equal((await b.accel(['detach', '--cgroup', b.cg.path, '--drain-ms', '0'])).exitCode, 0);
    assert.match(await rules(), /lookup 2764/, 'the rule the second interception needs stayed');
    assert.equal(await acceptLocal(), '1');
    const c = await nodeClient(viaSecond, SERVER4, ECHO_PORT, 4096);
    assert.ok(c.ok, JSON.stringify(c));
    assert.ok(await waitFor(() => b.proxyEvents().length === 1, 5000), 'still intercepted after the first detach');
    assert.equal((await b.accel(['detach', '--cgroup', second.path, '--drain-ms', '0'])).exitCode, 0);
    assert.doesNotMatch(await rules(), /lookup 2764/, 'gone with the last interception');
    assert.equal((await run('ip', ['route', 'show', 'table', '2764'], { netns: b.app, allowFailure: true })).stdout.trim(), '');
    assert.equal(await acceptLocal(), '0');
  });

  it('a proxy killed with SIGKILL makes new connections fail at once; a restarted proxy serves them again', async (t) => {
    const b = await interceptBench(t);
    assert.ok((await nodeClient(b, SERVER4, ECHO_PORT, 1024)).ok);
    await b.stopProxy('SIGKILL');
    for (const host of [SERVER4, SERVER6]) {
      const c = await nodeClient(b, host, ECHO_PORT, 1024);
      assert.equal(c.ok, false);
      assert.equal(c.error, 'ECONNREFUSED', `${host}: ${c.error}`);
      assert.ok(c.ms < 2000, `failed fast (${c.ms} ms)`);
    }
    assert.ok(b.tproxyCounters().no_listener >= 2n);
    await b.startProxy();
    for (const host of [SERVER4, SERVER6]) assert.ok((await nodeClient(b, host, ECHO_PORT, 64 * 1024)).ok, `${host} after restart`);
  });

  it('a proxy stopped with SIGTERM lets an open connection finish within the grace time', async (t) => {
    // A grace a busy machine's 64 MB echo fits in: the proxy exits as soon
    // as the connection is over, whatever is left of it.
    const b = await interceptBench(t, { proxyArgs: ['--grace-ms', '30000'] });
    const client = nodeClient(b, SERVER4, ECHO_PORT, 64 * MB);
    // Wait until the proxy has the connection, then ask it to stop.
    const deadline = Date.now() + 10_000;
    while (!b.proxyEvents().length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    b.proxy?.kill('SIGTERM');
    const c = await client;
    assert.ok(c.ok, `the open transfer completed: ${c.error}`);
    const done = await b.proxy?.done;
    assert.equal(done?.exitCode, 0);
    assert.ok(done?.stdout.includes('"event":"stopped"'));
  });
});

describe('interception: bad input leaves nothing behind', { skip: kernelLacks('intercept') }, () => {
  it('unknown interface, invalid CIDR or port, a proxy port nothing listens on: one error line, nothing installed', async (t) => {
    const b = await interceptBench(t, { attach: false });
    const base = ['attach', '--cgroup', b.cg.path, '--skip-selftest', '--proxy-port', String(PROXY_PORT)];
    const cases: [string[], RegExp, number][] = [
      [['--iface', 'nope0', '--intercept', '10.0.0.0/8:80'], /unknown interface nope0.*\[E_USAGE\]/, 2],
      [['--iface', b.iface, '--intercept', '10.0.0.300/8:80'], /invalid intercept rule.*\[E_USAGE\]/, 2],
      [['--iface', b.iface, '--intercept', '10.0.0.0/33:80'], /prefix length.*\[E_USAGE\]/, 2],
      [['--iface', b.iface, '--intercept', '10.0.0.0/8:70000'], /outside 1-65535.*\[E_USAGE\]/, 2],
      [['--iface', b.iface, '--intercept', '10.0.0.0/8'], /no port.*\[E_USAGE\]/, 2],
      [['--iface', b.iface], /needs --iface, --intercept and --proxy-port.*\[E_USAGE\]/, 2],
    ];
    for (const [extra, message, status] of cases) {
      const r = await b.accel([...base, ...extra]);
      assert.equal(r.exitCode, status, `${extra.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr.trim(), message);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    }
    // Port 15002: nothing listens there.
    const r = await b.accel(['attach', '--cgroup', b.cg.path, '--skip-selftest', '--iface', b.iface, '--intercept', '10.200.0.0/24:80', '--proxy-port', '15002']);
    assert.equal(r.exitCode, 3, r.stderr);
    assert.match(r.stderr.trim().split('\n').pop() ?? '', /nothing listens on 127\.0\.0\.1:15002.*\[E_PROXY_NOT_LISTENING\]/);
    assert.equal(fs.existsSync(attachmentPinDir(BPFFS, b.cg.id)), false, 'the fast path attached by that command was removed again');
    assert.equal(fs.existsSync(statePath(b.cg.id)), false);
    const rules = await run('ip', ['rule', 'show'], { netns: b.app });
    assert.doesNotMatch(rules.stdout, /2764/);
    const qd = await run('tc', ['qdisc', 'show', 'dev', b.iface], { netns: b.app });
    assert.doesNotMatch(qd.stdout, /clsact/);
  });

  it('a crash in the middle of attach is cleaned up by the next detach', async (t) => {
    const b = await interceptBench(t, { attach: false });
    const r = await run(
      process.execPath,
      [CLI, 'attach', '--cgroup', b.cg.path, '--skip-selftest', '--iface', b.iface, '--intercept', `10.200.0.0/24:${ECHO_PORT}`, '--proxy-port', String(PROXY_PORT)],
      { netns: b.app, allowFailure: true, env: { ...process.env, ACCEL_FAILPOINT: 'intercept-before-filters' } as Record<string, string> },
    );
    assert.notEqual(r.exitCode, 0);
    assert.ok(fs.existsSync(statePath(b.cg.id)), 'the record of what was added survived the crash');
    assert.match((await run('ip', ['rule', 'show'], { netns: b.app })).stdout, /2764/);
    const d = await b.accel(['detach', '--cgroup', b.cg.path, '--drain-ms', '0']);
    assert.equal(d.exitCode, 0, d.stderr);
    assert.doesNotMatch((await run('ip', ['rule', 'show'], { netns: b.app })).stdout, /2764/);
    assert.equal((await run('ip', ['route', 'show', 'table', '2764'], { netns: b.app, allowFailure: true })).stdout.trim(), '');
    assert.equal(fs.existsSync(statePath(b.cg.id)), false);
    assert.equal(fs.existsSync(attachmentPinDir(BPFFS, b.cg.id)), false);
  });

  it('a malformed policy file or a port in use stops the proxy with one clear line', async (t) => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-policy-'));
    t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
    const b = await interceptBench(t, { proxy: true, attach: false });
    const bad = path.join(tmp, 'bad.json');
    for (const [text, message] of [
      ['{ "rules": [ { "action": "maybe" } ] }', /rules\.0\.action/],
      ['{ "rules": [ { "action": "deny", "destination": "10.0.0.0/40" } ] }', /rules\.0\.destination/],
      ['{ not json', /not valid JSON/],
    ] as const) {
      fs.writeFileSync(bad, text);
      const r = await b.accel(['proxy', '--port', '15003', '--policy', bad]);
      assert.equal(r.exitCode, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.match(r.stderr.trim(), /\[E_POLICY\]$/);
    }
    const inUse = await b.accel(['proxy', '--port', String(PROXY_PORT)]);
    assert.equal(inUse.exitCode, 3, inUse.stderr);
    assert.match(inUse.stderr.trim(), /already in use.*\[E_ADDRESS_IN_USE\]$/);
  });
});
