// accel agent on real cgroups: directories shaped like the kubelet's pod
// cgroups (systemd and cgroupfs drivers) and like systemd units, all below
// a child cgroup of this test (its cgroupRoot). The agent runs as its own
// process, as on a node; its events (one JSON line each) and its
// /metrics are what the tests read, with the kernel's view beside them.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { cgroup2Root, createChildCgroup, removeCgroup } from '../../src/cgroup/cgroup.js';
import { fastPathBuildId, readBuildRecord } from '../../src/fastpath/build.js';
import { observeFastPath } from '../../src/fastpath/pins.js';
import { ownedRecordPath } from '../../src/agent/owned.js';
import { attachmentPinDir, STATE_DIR } from '../../src/paths.js';
import { runProbe, startHeldProbe } from '../../src/probe/sockprobe.js';
import { byteExact, transfer } from '../helpers/transfer.js';
import { type Cg, linkId, sd, startAgent, stopAgents, testTree, tmpDir, uid } from '../helpers/agent.js';
import { run, spawn } from '../../src/proc/run.js';
import { linkInfo, withPinned } from '../../src/bpf/fd.js';
import { interceptBuildId } from '../../src/intercept/build.js';
import { readRecord } from '../../src/intercept/record.js';
import { kernelLacks } from '../helpers/features.js';
import { HTTP_PORT, type InterceptBench, PROXY_PORT, interceptBench } from '../helpers/intercept.js';
import { INTERCEPTED_TRANSFER, interceptedByteExact, interceptedTransfer } from '../helpers/intercepted-transfer.js';
import { PROGRAM_VARIANT, variantBuild } from '../helpers/builds.js';
import { BPF_DIR, BPFFS, CLI, MB, accel, fastPathBytes, maps, nothingAttached, stopProcess, waitFor } from '../helpers/env.js';

function writeConfig(file: string, root: string, webGlobs: string[], webBypass: number[], selftest = false): void {
  fs.writeFileSync(
    file,
    [
      `cgroupRoot: ${root}`,
      'pollIntervalMs: 200',
      'selections:',
      '  - name: pods',
      '    cgroups: ["kubepods.slice/**/kubepods-*pod*.slice", "kubepods/*/pod*"]',
      `    fastPath: { selftest: ${selftest} }`,
      '  - name: web',
      `    cgroups: ${JSON.stringify(webGlobs)}`,
      `    fastPath: { bypassPorts: ${JSON.stringify(webBypass)}, selftest: ${selftest} }`,
      '',
    ].join('\n'),
  );
}

function freePort(): Promise<number> {
  return new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** Send `bytes` to an echo server and count what comes back. */
function echoOnce(host: string, port: number, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let got = 0;
    const sock = net.connect({ host, port }, () => sock.write(Buffer.alloc(bytes, 7)));
    sock.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= bytes) sock.destroy();
    });
    sock.on('close', () => resolve(got));
    sock.on('error', reject);
    sock.setTimeout(30_000, () => sock.destroy(new Error('echo timed out')));
  });
}

/** One scrape on a connection of its own, closed after it (a kept-alive
 * one would be an open fd of the agent's). */
function scrape(address: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(`http://${address}/metrics`, { agent: false, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(body));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(30_000, () => req.destroy(new Error('scrape timed out')));
  });
}

describe('accel agent', () => {
  it('attaches what its globs select (both kubelet drivers, systemd units), follows new and removed cgroups, and applies a configuration change in place', async (t) => {
    const tree = testTree(t);
    const podSystemd = tree.mk(`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${sd(uid(1))}.slice`);
    const podCgroupfs = tree.mk(`kubepods/besteffort/pod${uid(2)}`);
    const web = tree.mk('system.slice/web.service');
    const other = tree.mk('system.slice/other.service');
    const late = tree.mk('system.slice/late.service');
    // A connection of late.service open before it is enrolled: its bytes
    // move only after the enrolment (sockprobe --hold).
    const before = await startHeldProbe(['pair', '--bytes', String(8 * MB), '--back', String(MB)], { cgroupProcs: late.procs });
    t.after(() => before.kill());
    const config = path.join(tmpDir(t), 'agent.yaml');
    writeConfig(config, tree.root, ['system.slice/web.service'], [9999]);
    const agent = await startAgent(t, config);
    await agent.event((e) => e.event === 'ready');
    for (const cg of [podSystemd, podCgroupfs, web]) {
      assert.ok(linkId(cg) !== null, `${cg.rel} attached`);
      await agent.event((e) => e.event === 'attached' && e.cgroup === cg.rel);
    }
    assert.deepEqual(nothingAttached(other), { programs: [], pinDir: false }, 'a unit no glob selects is left alone');
    assert.deepEqual(nothingAttached(late), { programs: [], pinDir: false });

    // Traffic inside a selected cgroup takes the fast path.
    for (const cg of [podSystemd, podCgroupfs, web]) {
      const r = await runProbe(['pair', '--bytes', String(4 * MB), '--back', String(MB)], { cgroupProcs: cg.procs });
      assert.ok(r.ok, `${cg.rel}: ${r.error}`);
      const c = maps(cg, (m) => m.counters());
      assert.equal(c.sockets_inserted, 2n, cg.rel);
      assert.ok(fastPathBytes(c) >= BigInt(5 * MB), `${cg.rel}: ${c.bytes_redirected} bytes redirected`);
    }
    assert.deepEqual(
      maps(web, (m) => m.bypassPorts()),
      [9999],
    );

    // A configuration change: late.service is selected too, web's bypass
    // port changes. Nothing else is touched: the same links stay.
    const links = new Map([podSystemd, podCgroupfs, web].map((cg) => [cg.rel, linkId(cg)]));
    const eventsBefore = agent.events().length;
    writeConfig(config, tree.root, ['system.slice/{web,late}.service'], [9998]);
    agent.proc.kill('SIGHUP');
    await agent.event((e) => e.event === 'attached' && e.cgroup === late.rel);
    const updated = await agent.event((e) => e.event === 'updated' && e.cgroup === web.rel);
    assert.deepEqual(updated.steps, ['configure-fastpath', 'adopt-listeners']);
    assert.deepEqual(
      maps(web, (m) => m.bypassPorts()),
      [9998],
    );
    for (const cg of [podSystemd, podCgroupfs, web]) assert.equal(linkId(cg), links.get(cg.rel), `${cg.rel} kept its link`);
    const touched = agent
      .events()
      .slice(eventsBefore)
      .filter((e) => e.cgroup === podSystemd.rel || e.cgroup === podCgroupfs.rel);
    assert.deepEqual(touched, [], 'no event for the pods the change did not concern');

    // An attachment detached by hand is attached anew at the next poll.
    assert.equal((await accel(['detach', '--cgroup', web.path, '--drain-ms', '0'])).exitCode, 0);
    await waitFor(() => agent.events().filter((e) => e.event === 'attached' && e.cgroup === web.rel).length === 2, 20_000);
    assert.equal(agent.events().filter((e) => e.event === 'attached' && e.cgroup === web.rel).length, 2, 'web.service attached again');
    assert.deepEqual(
      maps(web, (m) => m.bypassPorts()),
      [9998],
    );

    // The connection open before late.service was enrolled still works,
    // byte-exact, on TCP; a new one takes the fast path.
    before.release();
    const r = await before.result;
    assert.ok(r.ok, r.error ?? '');
    assert.deepEqual(
      r.sides.map((s) => s.received ?? 0).sort((a, b) => a - b),
      [MB, 8 * MB],
    );
    assert.equal(
      maps(late, (m) => m.counters().sockets_inserted),
      0n,
      'the enrolled-late connection stayed off the map',
    );
    const fresh = await runProbe(['pair', '--bytes', String(2 * MB), '--back', '10'], { cgroupProcs: late.procs });
    assert.ok(fresh.ok, fresh.error ?? '');
    assert.ok(maps(late, (m) => m.counters().bytes_redirected) >= BigInt(2 * MB));

    // A new pod cgroup is picked up by the scan; a removed one is cleaned.
    const newPod = tree.mk(`kubepods/burstable/pod${uid(3)}`);
    await agent.event((e) => e.event === 'attached' && e.cgroup === newPod.rel);
    assert.ok(linkId(newPod) !== null);
    const pinDir = attachmentPinDir(BPFFS, podCgroupfs.id);
    assert.ok(fs.existsSync(pinDir));
    await removeCgroup(podCgroupfs);
    const gone = await agent.event((e) => e.event === 'detached' && e.cgroup === podCgroupfs.rel);
    assert.equal(gone.reason, 'removed');
    assert.equal(fs.existsSync(pinDir), false, "the removed cgroup's pins are gone");
    assert.equal(fs.readdirSync(STATE_DIR).filter((f) => f.includes(`cgroup-${podCgroupfs.id}`)).length, 0, 'and its records');

    // SIGTERM leaves the attachments in place.
    await stopProcess(agent.proc);
    assert.ok(agent.events().some((e) => e.event === 'stopped'));
    for (const cg of [podSystemd, web, late, newPod]) assert.ok(linkId(cg) !== null, `${cg.rel} still attached after SIGTERM`);
  });

  it('holds no file descriptor per attachment: its open fds stay flat across attaching, polls, scrapes, a configuration reload, removed and new cgroups', async (t) => {
    const tree = testTree(t);
    const config = path.join(tmpDir(t), 'agent.yaml');
    const write = (bypass: number) =>
      fs.writeFileSync(
        config,
        `cgroupRoot: ${tree.root}\npollIntervalMs: 200\nselections:\n  - name: pods\n    cgroups: ["kubepods/*/pod*"]\n    fastPath: { bypassPorts: [${bypass}], selftest: false }\n`,
      );
    write(9001);
    // A first pod: whatever the agent opens once per process is open after it.
    const first = tree.mk(`kubepods/burstable/pod${uid(100)}`);
    const agent = await startAgent(t, config);
    await agent.event((e) => e.event === 'attached' && e.cgroup === first.rel);
    const fds = () => fs.readdirSync(`/proc/${agent.proc.pid}/fd`).length;
    const scans = async () => Number(/^accel_agent_scans_total (\d+)$/m.exec(await scrape(agent.metrics))?.[1]);
    /** Wait for `n` more polls of the cgroup tree, scraping as it goes. */
    const polls = async (n: number) => {
      const until = (await scans()) + n;
      for (let i = 0; i < 200 && (await scans()) < until; i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok((await scans()) >= until, `${n} more polls`);
    };
    const count = (e: Record<string, unknown>[], event: string, cgs: Cg[]) => e.filter((x) => x.event === event && cgs.some((c) => c.rel === x.cgroup)).length;
    await polls(2);
    const base = fds();
    // What may come and go besides: the scrape's connection while it closes.
    const slack = 2;
    const seen: Record<string, number> = { base };
    const check = async (phase: string) => {
      await polls(3);
      seen[phase] = fds();
      assert.ok(seen[phase] <= base + slack, `open fds of the agent: ${JSON.stringify(seen)} (at most ${base} + ${slack})`);
    };

    const N = 12;
    const pods = Array.from({ length: N }, (_, i) => tree.mk(`kubepods/burstable/pod${uid(101 + i)}`));
    assert.ok(await waitFor(() => count(agent.events(), 'attached', pods) === N, 60_000), 'all attached');
    await check('attached');
    for (let i = 0; i < 3; i++) await scrape(agent.metrics);
    await check('polled and scraped');

    // A configuration change applied in place to every attachment (their maps opened and written).
    write(9002);
    agent.proc.kill('SIGHUP');
    assert.ok(await waitFor(() => count(agent.events(), 'updated', [first, ...pods]) === N + 1, 60_000), 'all updated');
    assert.deepEqual(
      maps(pods[0] as Cg, (m) => m.bypassPorts()),
      [9002],
    );
    await check('reloaded');

    // Half of the pods go, as many new ones come.
    const gone = pods.slice(0, N / 2);
    for (const cg of gone) await removeCgroup({ path: cg.path, id: cg.id });
    assert.ok(await waitFor(() => count(agent.events(), 'detached', gone) === gone.length, 60_000), 'the removed ones detached');
    const fresh = Array.from({ length: N / 2 }, (_, i) => tree.mk(`kubepods/burstable/pod${uid(201 + i)}`));
    assert.ok(await waitFor(() => count(agent.events(), 'attached', fresh) === fresh.length, 60_000), 'the new ones attached');
    await check('removed and added');
    for (const cg of fresh) assert.ok(linkId(cg) !== null, `${cg.rel} attached`);
  });

  it('answers while it attaches: a scrape made as the first tick starts is served before that tick has attached all 12 cgroups', async (t) => {
    const tree = testTree(t);
    const config = path.join(tmpDir(t), 'agent.yaml');
    fs.writeFileSync(config, `cgroupRoot: ${tree.root}\npollIntervalMs: 200\nselections:\n  - name: pods\n    cgroups: ["kubepods/*/pod*"]\n    fastPath: { selftest: false }\n`);
    const N = 12;
    const pods = Array.from({ length: N }, (_, i) => tree.mk(`kubepods/burstable/pod${uid(301 + i)}`));
    const agent = await startAgent(t, config);
    // The agent's own count at the time it served the scrape.
    const exposition = await scrape(agent.metrics);
    const attached = Number(/^accel_agent_reconciles_total\{result="attached"\} (\d+)$/m.exec(exposition)?.[1]);
    assert.ok(attached < N, `the scrape was served after ${attached} of ${N} attachments`);
    assert.ok(await waitFor(() => agent.events().filter((e) => e.event === 'attached' && pods.some((c) => c.rel === e.cgroup)).length === N, 60_000), 'then all attached');
  });

  it('kill -9 and restart during a transfer: the new agent adopts without a step, every byte arrives, none reset; --detach-on-exit removes everything', async (t) => {
    const tree = testTree(t);
    const pod = tree.mk(`kubepods.slice/kubepods-pod${sd(uid(4))}.slice`);
    const config = path.join(tmpDir(t), 'agent.yaml');
    writeConfig(config, tree.root, ['system.slice/web.service'], []);
    const first = await startAgent(t, config);
    await first.event((e) => e.event === 'attached' && e.cgroup === pod.rel);
    const link = linkId(pod);
    // About 5 s of paced traffic both ways.
    const { probe: held } = await transfer(t, pod);
    first.proc.kill('SIGKILL');
    await first.proc.done;
    const second = await startAgent(t, config, ['--detach-on-exit']);
    const adopted = await second.event((e) => e.event === 'adopted' && e.cgroup === pod.rel);
    assert.deepEqual(adopted.steps, []);
    assert.equal(second.events().filter((e) => e.event === 'attached' || e.event === 'updated').length, 0, 'adopted, not re-created');
    assert.equal(linkId(pod), link, 'the same link');
    const metrics = await (await fetch(`http://${second.metrics}/metrics`)).text();
    assert.match(metrics, /^accel_agent_attachments\{state="adopted"\} 1$/m);
    await byteExact(held);
    // --detach-on-exit: SIGTERM removes what the agent owns.
    await stopProcess(second.proc, 10_000);
    assert.deepEqual(nothingAttached(pod), { programs: [], pinDir: false });
    assert.equal(fs.existsSync(ownedRecordPath()), false);
  });

  it('upgrade: kill -9, then the agent of a second build (other sockops and sk_msg) during a transfer: upgraded in place, the same link, every byte in order, none reset', async (t) => {
    const v1 = await variantBuild(t, 'agent', PROGRAM_VARIANT);
    const tree = testTree(t);
    const pod = tree.mk(`kubepods.slice/kubepods-pod${sd(uid(6))}.slice`);
    const config = path.join(tmpDir(t), 'agent.yaml');
    writeConfig(config, tree.root, ['system.slice/web.service'], []);
    const first = await startAgent(t, config);
    await first.event((e) => e.event === 'attached' && e.cgroup === pod.rel);
    const link = linkId(pod);
    const progOf = () => {
      const o = observeFastPath(attachmentPinDir(BPFFS, pod.id), pod.id);
      return o.kind === 'complete' ? o.progIds : null;
    };
    const before = progOf();
    assert.equal(readBuildRecord(pod.id)?.buildId, fastPathBuildId(BPF_DIR));
    const { probe: held } = await transfer(t, pod);
    first.proc.kill('SIGKILL');
    await first.proc.done;
    const second = await startAgent(t, config, [], ['--bpf-dir', v1]);
    const upgraded = await second.event((e) => e.event === 'upgraded' && e.cgroup === pod.rel);
    assert.deepEqual(upgraded.steps, ['upgrade-fastpath', 'adopt-listeners']);
    assert.equal(second.events().filter((e) => e.event === 'attached' || e.event === 'adopted').length, 0, 'upgraded, neither re-created nor merely adopted');
    assert.equal(linkId(pod), link, 'the same link');
    const after = progOf();
    assert.ok(before && after);
    assert.notEqual(after.prog_sockops, before.prog_sockops, 'sockops replaced');
    assert.notEqual(after.prog_skmsg, before.prog_skmsg, 'sk_msg replaced');
    assert.deepEqual({ id: readBuildRecord(pod.id)?.buildId, how: readBuildRecord(pod.id)?.how }, { id: fastPathBuildId(v1), how: 'upgraded' });
    const metrics = await (await fetch(`http://${second.metrics}/metrics`)).text();
    assert.match(metrics, /^accel_agent_attachments\{state="upgraded"\} 1$/m);
    assert.match(metrics, /^accel_agent_reconciles_total\{result="upgraded"\} 1$/m);
    await byteExact(held);
    assert.ok(fastPathBytes(maps(pod, (m) => m.counters())) >= BigInt(320 * MB), 'all of it on the fast path');
  });

  it(
    'kill -9 and upgrade with an intercepted connection running (application -> tc -> proxy -> server): the restarted agent adopts, the agent of a second build upgrades the fast path and the interception in place, every byte in order, none reset',
    { skip: kernelLacks('intercept') },
    async (t) => {
      const v1 = await variantBuild(t, 'agent-intercept', PROGRAM_VARIANT);
      // Hooks run in the order registered: the agents stop before the bench
      // detaches (a running agent would attach again), the parent goes last.
      t.after(() => stopAgents());
      t.after(() => fs.rmSync(ownedRecordPath(), { force: true }));
      const parent = createChildCgroup(cgroup2Root(), 'accel-agent-ic');
      let b: InterceptBench;
      try {
        // The agent runs in the application's network namespace, where the
        // interception lives; the bench's proxy runs in the cgroup.
        b = await interceptBench(t, { attach: false, cgroupParent: parent.path });
      } finally {
        t.after(() => removeCgroup(parent));
      }
      const rel = path.basename(b.cg.path);
      const config = path.join(tmpDir(t), 'agent.yaml');
      const intercept = {
        ifaces: [b.iface],
        rules: [`10.200.0.0/24:${HTTP_PORT}-${HTTP_PORT + 9}`, `[fd00:200::/64]:${HTTP_PORT}-${HTTP_PORT + 9}`],
        proxyPort: PROXY_PORT,
      };
      fs.writeFileSync(
        config,
        [
          `cgroupRoot: ${parent.path}`,
          'pollIntervalMs: 200',
          'selections:',
          '  - name: app',
          '    cgroups: ["accel-ic-*"]',
          '    fastPath: { selftest: false }',
          `    intercept: ${JSON.stringify(intercept)}`,
          '',
        ].join('\n'),
      );
      const inApp = { netns: b.app };
      const first = await startAgent(t, config, [], [], undefined, inApp);
      const attached = await first.event((e) => e.event === 'attached' && e.cgroup === rel);
      assert.ok((attached.steps as string[]).includes('install-intercept'), JSON.stringify(attached));
      const record = readRecord(b.cg.id);
      assert.equal(record?.build?.buildId, interceptBuildId(BPF_DIR));
      // The programs on the interception's links (tcx, cgroup, netns), as the kernel says.
      const linkProgs = () => (readRecord(b.cg.id)?.added.hooks ?? []).flatMap((h) => (h.mode === 'tc' ? [] : [withPinned(h.linkPin, (fd) => linkInfo(fd))?.progId ?? null]));
      const progsBefore = linkProgs();
      assert.ok(progsBefore.length >= 2 && progsBefore.every((id) => id !== null));

      // kill -9 and restart on the same build: adopted, nothing replaced.
      const held = await interceptedTransfer(t, b, 2 * INTERCEPTED_TRANSFER);
      first.proc.kill('SIGKILL');
      await first.proc.done;
      const second = await startAgent(t, config, [], [], undefined, inApp);
      const adopted = await second.event((e) => e.event === 'adopted' && e.cgroup === rel);
      assert.deepEqual(adopted.steps, []);
      assert.deepEqual(readRecord(b.cg.id), record, 'the interception as it was: same hooks, same build');
      assert.deepEqual(linkProgs(), progsBefore, 'the same programs');
      await interceptedByteExact(b, held);

      // kill -9, then the agent of a second build: both upgraded in place.
      const across = await interceptedTransfer(t, b, 2 * INTERCEPTED_TRANSFER);
      second.proc.kill('SIGKILL');
      await second.proc.done;
      const third = await startAgent(t, config, [], ['--bpf-dir', v1], undefined, inApp);
      const upgraded = await third.event((e) => e.event === 'upgraded' && e.cgroup === rel);
      assert.deepEqual(upgraded.steps, ['upgrade-fastpath', 'adopt-listeners', 'upgrade-intercept']);
      assert.equal(third.events().filter((e) => e.event === 'attached' || e.event === 'adopted').length, 0, 'upgraded, neither re-created nor merely adopted');
      const after = readRecord(b.cg.id);
      assert.deepEqual({ id: after?.build?.buildId, how: after?.build?.how }, { id: interceptBuildId(v1), how: 'upgraded' });
      assert.deepEqual(
        after?.added.hooks.map((h) => h.mode),
        record?.added.hooks.map((h) => h.mode),
        'the same hooks',
      );
      const progsAfter = linkProgs();
      assert.ok(
        progsAfter.every((id, i) => id !== null && id !== progsBefore[i]),
        `every link runs a new program: ${progsBefore.join(',')} -> ${progsAfter.join(',')}`,
      );
      assert.equal(readBuildRecord(b.cg.id)?.buildId, fastPathBuildId(v1));
      await interceptedByteExact(b, across);
    },
  );

  it('a real Prometheus scrapes the agent: its series are there and its counters grow across a transfer; promtool accepts the exposition', async (t) => {
    const tree = testTree(t);
    const web = tree.mk('system.slice/web.service');
    const dir = tmpDir(t);
    const config = path.join(dir, 'agent.yaml');
    // The self-test runs once (the first install) and its record is kept for both.
    const pod = tree.mk(`kubepods/besteffort/pod${uid(5)}`);
    writeConfig(config, tree.root, ['system.slice/web.service'], [], true);
    const agent = await startAgent(t, config);
    await agent.event((e) => e.event === 'ready', 120_000);
    assert.ok(linkId(web) !== null && linkId(pod) !== null);

    const exposition = await (await fetch(`http://${agent.metrics}/metrics`)).text();
    const check = await run('promtool', ['check', 'metrics'], { input: exposition, allowFailure: true });
    assert.equal(check.exitCode, 0, `promtool: ${check.stdout}${check.stderr}`);
    for (const cg of [web, pod]) assert.match(exposition, new RegExp(`^accel_selftest_reader_safe\\{cgroup="${cg.rel}",.*reader="splice"\\} [01]$`, 'm'));
    for (const p of ['/healthz', '/readyz']) assert.equal((await fetch(`http://${agent.metrics}${p}`)).status, 200, p);

    // An echo server with --metrics-addr, scraped by the same Prometheus.
    const echoPort = await freePort();
    const echo = spawn(process.execPath, [CLI, 'echo', '--port', String(echoPort), '--host', '127.0.0.1', '--metrics-addr', '127.0.0.1:0']);
    t.after(() => stopProcess(echo));
    const echoLine = await echo.waitForLine((l) => l.includes('"event":"listening"'));
    if (!echoLine) assert.fail(`echo did not start: ${(await echo.done).stderr}`);
    const echoMetrics = (JSON.parse(echoLine) as { metrics: string }).metrics;
    const echoExposition = await (await fetch(`http://${echoMetrics}/metrics`)).text();
    const echoCheck = await run('promtool', ['check', 'metrics'], { input: echoExposition, allowFailure: true });
    assert.equal(echoCheck.exitCode, 0, `promtool (echo): ${echoCheck.stdout}${echoCheck.stderr}`);

    const port = await freePort();
    fs.writeFileSync(
      path.join(dir, 'prometheus.yml'),
      `global: { scrape_interval: 1s, evaluation_interval: 1s }\nscrape_configs:\n  - job_name: accel-agent\n    static_configs: [{ targets: ['${agent.metrics}'] }]\n  - job_name: accel-echo\n    static_configs: [{ targets: ['${echoMetrics}'] }]\n`,
    );
    const prom = spawn('prometheus', [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ]);
    t.after(() => stopProcess(prom, 10_000));
    const query = async (q: string): Promise<number | null> => {
      try {
        const res = (await (await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(q)}`)).json()) as { data?: { result?: { value: [number, string] }[] } };
        const v = res.data?.result?.[0]?.value[1];
        return v === undefined ? null : Number(v);
      } catch {
        return null;
      }
    };
    const poll = async (q: string, ok: (v: number) => boolean, what: string): Promise<number> => {
      let v: number | null = null;
      const end = Date.now() + 30_000;
      while (Date.now() < end) {
        v = await query(q);
        if (v !== null && ok(v)) return v;
        await new Promise((r) => setTimeout(r, 250));
      }
      assert.fail(`${what}: ${q} = ${v}`);
    };
    await poll('up{job="accel-agent"}', (v) => v === 1, 'Prometheus scrapes the agent');
    const series = `accel_fastpath_redirected_bytes_total{cgroup="${web.rel}",selection="web"}`;
    const v0 = await poll(series, () => true, 'the series exists');
    await poll(`accel_agent_attachments{state="attached"}`, (v) => v === 2, 'two attachments');
    const r = await runProbe(['pair', '--bytes', String(8 * MB), '--back', String(MB)], { cgroupProcs: web.procs });
    assert.ok(r.ok, r.error ?? '');
    await poll(series, (v) => v >= v0 + 9 * MB, 'redirected bytes grew by the transfer');
    await poll(`accel_fastpath_sockets_inserted_total{cgroup="${web.rel}"}`, (v) => v >= 2, 'sockets inserted');
    assert.equal(await query(`accel_fastpath_redirected_bytes_total{cgroup="${pod.rel}"}`), 0, 'the other cgroup carried nothing');

    // The echo server's counters grow across an echoed MB.
    await poll('up{job="accel-echo"}', (v) => v === 1, 'Prometheus scrapes the echo server');
    const e0 = await poll('accel_splice_bytes_total{job="accel-echo"}', () => true, 'the splice series exists');
    assert.equal(await echoOnce('127.0.0.1', echoPort, MB), MB);
    await poll('accel_echo_connections_accepted_total', (v) => v >= 1, 'an accepted connection');
    await poll('accel_splice_bytes_total{job="accel-echo"}', (v) => v >= e0 + MB, 'bytes spliced by the kernel');
  });
});
