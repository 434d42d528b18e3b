// accel agent on real cgroups: directories shaped like the kubelet's pod
// cgroups (systemd and cgroupfs drivers) and like systemd units, all below
// a child cgroup of this test (its cgroupRoot). The agent runs as its own
// process, as on a node; its events (one JSON line each) and its
// /metrics are what the tests read, with the kernel's view beside them.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { cgroup2Root, createChildCgroup, removeCgroup } from '../../src/cgroup/cgroup.js';
import { fastPathBuildId, readBuildRecord } from '../../src/fastpath/build.js';
import { observeFastPath } from '../../src/fastpath/pins.js';
import { ownedRecordPath } from '../../src/agent/owned.js';
import { attachmentPinDir, STATE_DIR } from '../../src/paths.js';
import { runProbe, startHeldProbe } from '../../src/probe/sockprobe.js';
import { byteExact, transfer } from '../helpers/transfer.js';
import { run, spawn, type Spawned } from '../../src/proc/run.js';
import { PROGRAM_VARIANT, variantBuild } from '../helpers/builds.js';
import { BPF_DIR, BPFFS, CLI, MB, accel, fastPathBytes, maps, nothingAttached, stopProcess, waitFor } from '../helpers/env.js';

interface Cg {
  path: string;
  id: bigint;
  procs: string;
  rel: string;
}

const uid = (n: number) => `7a1b2c3d-0000-4000-8000-${String(n).padStart(12, '0')}`;
const sd = (u: string) => u.replace(/-/g, '_');

/** Agents of this file still running. */
const running = new Set<Spawned>();

/** A test-owned cgroup tree; everything in it is detached and removed at the end. */
function testTree(t: TestContext) {
  const root = createChildCgroup(cgroup2Root(), 'accel-agent-test');
  const made: Cg[] = [];
  const mk = (rel: string): Cg => {
    fs.mkdirSync(path.join(root.path, rel), { recursive: true });
    const p = path.join(root.path, rel);
    const cg = { path: p, id: fs.statSync(p, { bigint: true }).ino, procs: path.join(p, 'cgroup.procs'), rel };
    made.push(cg);
    return cg;
  };
  t.after(async () => {
    // Agents first: a running agent would attach again what is detached here.
    await Promise.all([...running].map((p) => stopProcess(p)));
    for (const cg of made) {
      if (fs.existsSync(attachmentPinDir(BPFFS, cg.id))) await accel(['detach', '--cgroup-id', String(cg.id), '--drain-ms', '0']);
    }
    fs.rmSync(ownedRecordPath(), { force: true });
    // Deepest first.
    const dirs: string[] = [];
    const walk = (d: string) => {
      for (const e of fs.readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(path.join(d, e.name));
      dirs.push(d);
    };
    if (fs.existsSync(root.path)) walk(root.path);
    for (const d of dirs) await removeCgroup({ path: d, id: 0n });
  });
  return { root: root.path, mk };
}

interface Agent {
  proc: Spawned;
  metrics: string;
  /** The first event line after `from` lines matching. */
  event(match: (e: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  events(): Record<string, unknown>[];
}

async function startAgent(t: TestContext, config: string, extra: string[] = [], globals: string[] = []): Promise<Agent> {
  const proc = spawn(process.execPath, [CLI, ...globals, 'agent', '--config', config, '--metrics-addr', '127.0.0.1:0', ...extra], { watchStderr: false });
  running.add(proc);
  void proc.done.then(() => running.delete(proc));
  t.after(() => stopProcess(proc));
  const events = () =>
    proc
      .lines()
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const listening = await proc.waitForLine((l) => l.includes('"event":"listening"'));
  if (!listening) throw new Error(`the agent did not start: ${(await proc.done).stderr}`);
  return {
    proc,
    metrics: (JSON.parse(listening) as { metrics: string }).metrics,
    events,
    event: async (match, timeoutMs = 20_000) => {
      let found: Record<string, unknown> | undefined;
      const ok = await waitFor(() => (found = events().find(match)) !== undefined, timeoutMs);
      assert.ok(
        ok && found,
        `no such event; the agent said:\n${events()
          .map((e) => JSON.stringify(e))
          .join('\n')}`,
      );
      return found;
    },
  };
}

const linkId = (cg: Cg) => {
  const o = observeFastPath(attachmentPinDir(BPFFS, cg.id), cg.id);
  return o.kind === 'complete' ? o.linkId : null;
};

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

function tmpDir(t: TestContext): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-agent-'));
  t.after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
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

  it('kill -9 and restart during a transfer: the new agent adopts without a step, every byte arrives, none reset; --detach-on-exit removes everything', async (t) => {
    const tree = testTree(t);
    const pod = tree.mk(`kubepods.slice/kubepods-pod${sd(uid(4))}.slice`);
    const config = path.join(tmpDir(t), 'agent.yaml');
    writeConfig(config, tree.root, ['system.slice/web.service'], []);
    const first = await startAgent(t, config);
    await first.event((e) => e.event === 'attached' && e.cgroup === pod.rel);
    const link = linkId(pod);
    // About 5 s of paced traffic both ways.
    const { probe: held, finished } = await transfer(t, pod);
    first.proc.kill('SIGKILL');
    await first.proc.done;
    const second = await startAgent(t, config, ['--detach-on-exit']);
    const adopted = await second.event((e) => e.event === 'adopted' && e.cgroup === pod.rel);
    assert.deepEqual(adopted.steps, []);
    assert.equal(second.events().filter((e) => e.event === 'attached' || e.event === 'updated').length, 0, 'adopted, not re-created');
    assert.equal(linkId(pod), link, 'the same link');
    assert.equal(finished(), false, 'the transfer was still running across the restart');
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
    const { probe: held, finished } = await transfer(t, pod);
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
    assert.equal(finished(), false, 'the transfer was still running across the upgrade');
    const metrics = await (await fetch(`http://${second.metrics}/metrics`)).text();
    assert.match(metrics, /^accel_agent_attachments\{state="upgraded"\} 1$/m);
    assert.match(metrics, /^accel_agent_reconciles_total\{result="upgraded"\} 1$/m);
    await byteExact(held);
    assert.ok(fastPathBytes(maps(pod, (m) => m.counters())) >= BigInt(320 * MB), 'all of it on the fast path');
  });

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
