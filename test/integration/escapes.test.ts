// Ways out of the interception policy (issue 24, section 2), tried as the
// attacker would: a process of the intercepted cgroup running as uid 65534,
// unprivileged, or with only CAP_NET_RAW where that is the point (Docker's
// and Kubernetes' default capability sets grant it). In the namespaces of
// scripts/setup-netns.sh, through test/helpers/intercept.ts.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { queryCgroupPrograms } from '../../src/bpf/attach.js';
import { type Placement, run, spawn } from '../../src/proc/run.js';
import { stopProcess, waitFor } from '../helpers/env.js';
import { kernelLacks } from '../helpers/features.js';
import { ECHO_PORT, FIXTURES, HTTP_PORT, OTHER_PORT, PROXY_PORT, SERVER4, type InterceptBench, interceptBench } from '../helpers/intercept.js';

const CLIENT = path.join(FIXTURES, 'escape-client.py');
/** BPF_CGROUP_INET_EGRESS */
const CGROUP_INET_EGRESS = 1;
/** The proxy's default mark (attach --proxy-mark, proxy --mark). */
const PROXY_MARK = '181141506';

/** uid/gid 65534, no groups; with net_raw, CAP_NET_RAW and nothing else. */
function attacker(netRaw: boolean): string[] {
  const caps = netRaw ? ['--inh-caps=+net_raw', '--ambient-caps=+net_raw'] : ['--inh-caps=-all'];
  return ['--reuid=65534', '--regid=65534', '--clear-groups', ...caps];
}

interface ClientResult {
  ok: boolean;
  error: string | null;
  received?: number;
  mark?: number | null;
  device?: string | null;
}

/** test/fixtures/escape-client.py as uid 65534 in the application's place. */
async function client(where: Placement, args: string[], netRaw = false): Promise<ClientResult> {
  const r = await run('setpriv', [...attacker(netRaw), '/usr/bin/python3', CLIENT, ...args], { ...where, allowFailure: true, timeoutMs: 30_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return line.startsWith('{') ? (JSON.parse(line) as ClientResult) : { ok: false, error: r.stderr || `exit ${r.exitCode}` };
}

function policyFile(t: { after: (fn: () => void) => void }, policy: object): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-escapes-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'policy.json');
  fs.writeFileSync(file, JSON.stringify(policy));
  return file;
}

const accepted = (b: InterceptBench, port: number) => b.serverAccepts().filter((a) => a.local.endsWith(`:${port}`)).length;
const DENY_ECHO = { default: 'allow', rules: [{ action: 'deny', destination: `${SERVER4}/32`, ports: ECHO_PORT, name: 'no echo' }] };

describe('ways out of the interception policy', { skip: kernelLacks('intercept') }, () => {
  it("SO_MARK set to the proxy's mark (uid 65534 with only CAP_NET_RAW) is steered like any other SYN and denied; the proxy's own upstream still is not", async (t) => {
    const b = await interceptBench(t, { proxyArgs: ['--policy', policyFile(t, DENY_ECHO)] });

    const forged = await client(b.appWhere, ['tcp', SERVER4, String(ECHO_PORT), '--mark', PROXY_MARK], true);
    assert.equal(forged.mark, Number(PROXY_MARK), `the attacker did set the mark: ${JSON.stringify(forged)}`);
    assert.equal(forged.ok, false, `the forged mark got through: ${JSON.stringify(forged)}`);
    assert.equal(accepted(b, ECHO_PORT), 0, 'nothing reached the denied server');
    const c = b.tproxyCounters();
    assert.ok(c.proxy_mark_forged >= 1n, `counted as a forged mark (${c.proxy_mark_forged})`);
    assert.ok(
      b.proxyEvents().some((e) => e.action === 'deny' && e.destination === `${SERVER4}:${ECHO_PORT}`),
      'the proxy saw it and denied it (its loop guard did not take it for its own)',
    );

    // The proxy runs in the cgroup: its upstream connection is known by the
    // record on its socket and still leaves unsteered.
    const allowed = await client(b.appWhere, ['tcp', SERVER4, String(HTTP_PORT), '--host', 'a.test']);
    assert.ok(allowed.ok, JSON.stringify(allowed));
    assert.ok(b.tproxyCounters().proxy_packets_skipped >= 1n, "the proxy's own SYN was recognised");
    assert.equal(b.proxyEvents().filter((e) => /loop/.test(e.reason)).length, 0, 'no loop');
  });

  it("the proxy's cgroup/sock_create program records the proxy's sockets only: a root process of the same cgroup, mark forged or not, is steered and denied", async (t) => {
    const b = await interceptBench(t, { proxyArgs: ['--policy', policyFile(t, DENY_ECHO)] });
    const listening = JSON.parse(b.proxy?.lines().find((l) => l.includes('"event":"listening"')) ?? '{}') as { ownSockets?: string };
    assert.equal(listening.ownSockets, 'sock_create', 'the proxy in its cgroup has the kernel record its sockets');

    // Root, with every capability, in the proxy's own cgroup: the program
    // is there, and it must not take these sockets for the proxy's.
    for (const extra of [[], ['--mark', PROXY_MARK]]) {
      const r = await run('/usr/bin/python3', [CLIENT, 'tcp', SERVER4, String(ECHO_PORT), ...extra], { ...b.appWhere, allowFailure: true, timeoutMs: 30_000 });
      const out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as ClientResult;
      assert.equal(out.ok, false, `root of the cgroup got through (${extra.join(' ') || 'no mark'}): ${r.stdout}`);
    }
    assert.equal(accepted(b, ECHO_PORT), 0, 'nothing reached the denied server');
    assert.equal(b.proxyEvents().filter((e) => e.action === 'deny' && e.destination === `${SERVER4}:${ECHO_PORT}`).length, 2, 'both were steered to the proxy and denied');

    // The proxy's own upstream connection leaves unsteered, with its mark.
    const allowed = await client(b.appWhere, ['tcp', SERVER4, String(HTTP_PORT), '--host', 'a.test']);
    assert.ok(allowed.ok, JSON.stringify(allowed));
    assert.ok(b.tproxyCounters().proxy_packets_skipped >= 1n, "the proxy's own SYN was recognised");
    assert.equal(b.proxyEvents().filter((e) => /loop/.test(e.reason)).length, 0, 'no loop');
  });

  /** An HTTP/1.0 service on 127.0.0.1 (it closes first), the cgroup's
   * connections to it intercepted on lo, and one allowed connection from
   * the source port `port`: the proxy's accepted socket of it is left in
   * TIME_WAIT, holding the 4-tuple the client reuses next. */
  async function proxySideTimeWait(t: Parameters<typeof interceptBench>[0], port: number) {
    const policy = policyFile(t, { default: 'allow', rules: [{ action: 'deny', host: 'secret.test', name: 'no secret' }] });
    // Both names are the service's address (a name counts only at an
    // address of its own: src/proxy/name-binding.ts), in the proxy's own
    // /etc/hosts; no name server.
    const etc = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-escapes-etc-'));
    t.after(() => fs.rmSync(etc, { recursive: true, force: true }));
    const hostsFile = path.join(etc, 'hosts');
    const resolvConf = path.join(etc, 'resolv.conf');
    fs.writeFileSync(hostsFile, '127.0.0.1 localhost secret.test allowed.test\n');
    fs.writeFileSync(resolvConf, 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
    const b = await interceptBench(t, { proxyArgs: ['--policy', policy], attach: false, proxyEtc: { hosts: hostsFile, resolvConf } });
    // The real service, on this host, outside the cgroup: HTTP/1.0, it closes first.
    const service = spawn('python3', [path.join(FIXTURES, 'http10-server.py'), '127.0.0.1', String(HTTP_PORT)], { netns: b.app });
    t.after(() => stopProcess(service));
    assert.ok(await service.waitForLine((l) => l.includes('"listening"')), 'the service listens');
    const a = await b.accel(['attach', '--cgroup', b.cg.path, '--skip-selftest', '--iface', 'lo', '--intercept', `127.0.0.1/32:${HTTP_PORT}`, '--proxy-port', String(PROXY_PORT)]);
    assert.equal(a.exitCode, 0, a.stderr);
    const hosts = () =>
      service
        .lines()
        .filter((l) => l.includes('"request"'))
        .map((l) => (JSON.parse(l) as { host: string | null }).host);

    const fresh = await client(b.appWhere, ['tcp', '127.0.0.1', String(HTTP_PORT), '--host', 'secret.test']);
    assert.equal(fresh.ok, false, JSON.stringify(fresh));
    const ok = await client(b.appWhere, ['tcp', '127.0.0.1', String(HTTP_PORT), '--host', 'allowed.test', '--bind-port', String(port)]);
    assert.ok(ok.ok, `${JSON.stringify(ok)}: ${JSON.stringify(b.proxyEvents())}`);
    // The proxy's accepted socket closed first: it holds the 4-tuple.
    const timeWait = async () =>
      (await run('ss', ['-Htan', 'state', 'time-wait', `( sport = :${HTTP_PORT} and dport = :${port} )`], { netns: b.app, allowFailure: true })).stdout.trim() !== '';
    let tw = false;
    for (let i = 0; i < 40 && !tw; i++) {
      tw = await timeWait();
      if (!tw) await sleep(50);
    }
    assert.ok(tw, 'the proxy-side socket is in TIME_WAIT');
    return { b, hosts };
  }

  it('a SYN reusing the 4-tuple of a proxy-side TIME_WAIT socket goes to the proxy, never to the real service behind it (--iface lo)', async (t) => {
    const port = 40123;
    const { b, hosts } = await proxySideTimeWait(t, port);
    const denied = () => b.proxyEvents().filter((e) => e.action === 'deny' && e.source.endsWith(`:${port}`)).length;

    for (let i = 0; i < 2; i++) {
      const again = await client(b.appWhere, ['tcp', '127.0.0.1', String(HTTP_PORT), '--host', 'secret.test', '--bind-port', String(port), '--timeout', '2']);
      assert.equal(again.ok, false, `round ${i}: ${JSON.stringify(again)}`);
    }
    assert.deepEqual(hosts(), ['allowed.test'], 'the service never saw the denied Host');
    // The kernel retired the TIME_WAIT socket, and its listener lookup
    // found the proxy (sk_lookup.c), which denied the request.
    const c = b.tproxyCounters();
    assert.ok(c.syn_tw_retired >= 1n && c.tw_assigned >= 1n, `left to the kernel and given to the proxy (${c.syn_tw_retired}, ${c.tw_assigned})`);
    assert.ok(denied() >= 1, `the proxy denied the reused 4-tuple: ${JSON.stringify(b.proxyEvents())}`);
  });

  it('a client reusing its source port right after a proxy-side TIME_WAIT connects at once through the proxy (no SYN dropped)', async (t) => {
    const port = 40124;
    const { b, hosts } = await proxySideTimeWait(t, port);

    // Its first SYN must be taken: a drop (the old behaviour) has the
    // client retransmit, past the 2 s, until the TIME_WAIT is gone (60 s).
    const again = await client(b.appWhere, ['tcp', '127.0.0.1', String(HTTP_PORT), '--host', 'allowed.test', '--bind-port', String(port), '--timeout', '2']);
    assert.ok(again.ok, `${JSON.stringify(again)}: ${JSON.stringify(b.tproxyCounters(), (_k, v: unknown) => (typeof v === 'bigint' ? String(v) : v))}`);
    assert.deepEqual(hosts(), ['allowed.test', 'allowed.test'], 'both requests reached the service through the proxy');
    const c = b.tproxyCounters();
    assert.equal(c.syn_tuple_busy, 0n, 'no SYN was given to the listener while the old socket held its 4-tuple');
    assert.ok(c.syn_tw_retired >= 1n, `the SYN was left to the kernel to retire the TIME_WAIT socket (${c.syn_tw_retired})`);
    assert.ok(c.tw_assigned >= 1n, `sk_lookup.c gave it to the proxy listener (${c.tw_assigned})`);
    assert.equal(c.tw_dropped, 0n, 'none dropped');
    assert.equal(
      b.proxyEvents().filter((e) => e.action === 'allow' && e.source.endsWith(`:${port}`)).length,
      2,
      `the proxy relayed both (never the service directly): ${JSON.stringify(b.proxyEvents())}`,
    );
  });

  it('a covered connection bound (SO_BINDTODEVICE, unprivileged) to a device interception does not hook is dropped and counted; uncovered ones there pass', async (t) => {
    const b = await interceptBench(t, { proxyArgs: ['--policy', policyFile(t, DENY_ECHO)] });
    // A second way to the server: another veth pair, with a route to the
    // covered range that only a socket bound to it takes.
    const side = `${b.iface.slice(0, -2)}x1`;
    const peer = `${b.iface.slice(0, -2)}y1`;
    await run('ip', ['link', 'add', side, 'netns', b.app, 'type', 'veth', 'peer', 'name', peer, 'netns', b.remote]);
    await run('ip', ['-n', b.app, 'addr', 'add', '10.201.0.1/24', 'dev', side]);
    await run('ip', ['-n', b.remote, 'addr', 'add', '10.201.0.2/24', 'dev', peer]);
    await run('ip', ['-n', b.app, 'link', 'set', side, 'up']);
    await run('ip', ['-n', b.remote, 'link', 'set', peer, 'up']);
    await run('ip', ['-n', b.app, 'route', 'add', '10.200.0.0/24', 'via', '10.201.0.2', 'dev', side, 'metric', '500']);
    // The answers come back on that device from an address routed by the
    // other: no reverse-path filter in the way.
    for (const key of ['all', side]) await run('ip', ['netns', 'exec', b.app, 'sysctl', '-qw', `net.ipv4.conf.${key}.rp_filter=0`]);

    const unbound = await client(b.appWhere, ['tcp', SERVER4, String(ECHO_PORT)]);
    assert.equal(unbound.ok, false, `denied through the proxy: ${JSON.stringify(unbound)}`);
    const bound = await client(b.appWhere, ['tcp', SERVER4, String(ECHO_PORT), '--device', side, '--timeout', '2']);
    assert.equal(bound.device, side, 'the attacker did bind the socket');
    assert.equal(bound.ok, false, `left by ${side} unpoliced: ${JSON.stringify(bound)}`);
    assert.equal(accepted(b, ECHO_PORT), 0, 'nothing reached the denied server');
    assert.ok(b.tproxyCounters().unhooked_refused >= 1n, `counted (${b.tproxyCounters().unhooked_refused})`);
    // Not covered: the guard has nothing to say.
    const other = await client(b.appWhere, ['tcp', SERVER4, String(OTHER_PORT), '--device', side]);
    assert.ok(other.ok, JSON.stringify(other));
  });

  it('--intercept-udp refuse: UDP of the cgroup to covered destinations fails with EPERM (QUIC falls back to TCP), other UDP passes; the guard is a recorded hook, in status, gone on detach', async (t) => {
    const b = await interceptBench(t, { attachArgs: ['--intercept-udp', 'refuse'] });
    const covered = await client(b.appWhere, ['udp', SERVER4, String(HTTP_PORT)]);
    assert.deepEqual([covered.ok, covered.error], [false, 'EPERM'], JSON.stringify(covered));
    const other = await client(b.appWhere, ['udp', SERVER4, String(OTHER_PORT)]);
    assert.ok(other.ok, JSON.stringify(other));
    assert.ok(b.tproxyCounters().udp_refused >= 1n);

    const st = await b.accel(['status', '--cgroup', b.cg.path, '--json']);
    const ic = (JSON.parse(st.stdout) as { attachments: { intercept: { cgroupHooks: number; filtersPresent: boolean; counters: Record<string, string> } }[] }).attachments[0]
      ?.intercept;
    assert.deepEqual([ic?.cgroupHooks, ic?.filtersPresent, ic?.counters.udp_refused], [1, true, '1']);
    assert.equal(queryCgroupPrograms(b.cg.path, CGROUP_INET_EGRESS).length, 1, 'the guard is on the cgroup');

    // Changed in place: UDP passes again.
    const pass = await b.attach(['--json']);
    assert.equal(pass.exitCode, 0, pass.stderr);
    const steps = (JSON.parse(pass.stdout) as { steps: string[] }).steps;
    assert.ok(steps.includes('configure-intercept') && !steps.includes('install-intercept'), steps.join(', '));
    assert.ok((await client(b.appWhere, ['udp', SERVER4, String(HTTP_PORT)])).ok);

    const d = await b.accel(['detach', '--cgroup', b.cg.path, '--drain-ms', '0']);
    assert.equal(d.exitCode, 0, d.stderr);
    assert.ok(await waitFor(() => queryCgroupPrograms(b.cg.path, CGROUP_INET_EGRESS).length === 0, 2000), 'detach removed the guard');
  });

  it("a proxy named by --proxy-pid that runs in the intercepted cgroup is refused: its own connections cannot be told from the cgroup's", async (t) => {
    const b = await interceptBench(t, { proxy: false, attach: false });
    const socat = spawn('socat', [`TCP4-LISTEN:${PROXY_PORT},bind=127.0.0.1,reuseaddr,fork,transparent`, `TCP4:${SERVER4}:${ECHO_PORT}`], b.appWhere);
    t.after(() => stopProcess(socat));
    const line = `:${PROXY_PORT.toString(16).toUpperCase()} 00000000:0000 0A`;
    const listens = () => {
      try {
        return fs.readFileSync(`/proc/${socat.pid}/net/tcp`, 'utf8').includes(line);
      } catch {
        return false;
      }
    };
    assert.ok(await waitFor(listens, 5000), 'socat listens');
    const r = await b.accel([
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
    ]);
    assert.equal(r.exitCode, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    assert.match(r.stderr, /runs in the intercepted cgroup.*run it outside the cgroup.*\[E_USAGE\]/);
    assert.equal(queryCgroupPrograms(b.cg.path, CGROUP_INET_EGRESS).length, 0, 'nothing installed');
  });
});
