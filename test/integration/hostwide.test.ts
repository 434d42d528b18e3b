// Host-wide attach: the root of the cgroup2 mount. Never the real host's:
// the root here is that of a cgroup namespace of the test's own (a child
// cgroup P of the real hierarchy, mounted over /sys/fs/cgroup in a private
// mount namespace, with its own bpffs, network and pid namespaces;
// test/helpers/cgroupns.ts). Inside: the refusal when the self-test finds
// readers this kernel breaks (it has them: splice(2), blocking after a
// half-close), and without the self-test; the option that accepts the
// risk; two processes in two child cgroups on the fast path, one in a third
// child on a bypass port not; verify, status; interception at the root
// (the client in a child steered to the proxy, the proxy's own upstream
// connection not, no loop); a nested attach whose self-test runs under that
// interception and is not caught; detach; nothing left. And the hint for a
// --cgroup that is not there.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { queryCgroupPrograms } from '../../src/bpf/attach.js';
import { AttachType } from '../../src/bpf/uapi.js';
import { cgroup2Root } from '../../src/cgroup/cgroup.js';
import { run } from '../../src/proc/run.js';
import { CLI, MB } from '../helpers/env.js';
import { kernelLacks } from '../helpers/features.js';
import { namespaceRoot, part, runAtNamespaceRoot } from '../helpers/cgroupns.js';

const PROXY_PORT = 15072;
const PORT_A = 7472;
const PORT_BYPASS = 7473;

interface Attachment {
  cgroupPath: string;
  state: string;
  counters: Record<string, string> | null;
  intercept: { counters: Record<string, string> | null } | null;
}
const at = (s: { attachments: Attachment[] }, cg: string) => s.attachments.find((a) => a.cgroupPath === cg);
const counter = (s: { attachments: Attachment[] }, cg: string, name: string) => BigInt(at(s, cg)?.counters?.[name] ?? -1);

describe('host-wide: the root cgroup', { skip: kernelLacks('fastpath', 'intercept') }, () => {
  it('refused on unsafe readers unless accepted; then every child on the fast path, bypass ports kept, interception at the root without a loop; nested self-test not caught', async (t) => {
    const ns = namespaceRoot(t, 'accel-hostwide');
    const { accel, tmp } = ns;
    const script = `
mkdir $R/a $R/b $R/c
echo "REFUSED $(${accel} attach --cgroup $R --json | tr -d '\\n')"
echo "LEFT1 {\\"pins\\": \\"$(pins)\\", \\"hooks\\": $(hooks $R)}"
echo "SKIPREFUSED $(${accel} attach --cgroup $R --skip-selftest --json | tr -d '\\n')"
rc=0; ${accel} attach --cgroup $R --accept-unsafe-readers-host-wide --bypass-port ${PORT_BYPASS} > ${tmp}/accept.txt 2>&1 || rc=$?
echo "ACCEPTRC {\\"rc\\": $rc, \\"hooks\\": $(hooks $R)}"
echo_server $R/a ${tmp}/a.log ${PORT_A}
echo_server $R/c ${tmp}/c.log ${PORT_BYPASS}
waitfor ${tmp}/a.log 1; waitfor ${tmp}/c.log 1
echo "S0 $(status)"
echo "AB $(client $R/b ${PORT_A} ${MB})"
echo "S1 $(status)"
echo "BYPASS $(client $R/b ${PORT_BYPASS} ${MB})"
echo "S2 $(status)"
echo "VERIFY $(${accel} verify --cgroup $R --probe --json | tr -d '\\n')"
${accel} --log-format json proxy --port ${PROXY_PORT} --no-splice --grace-ms 200 > ${tmp}/proxy.log 2>&1 &
proxy_pid=$!
waitfor ${tmp}/proxy.log 1
echo "INTERCEPT $(${accel} attach --cgroup $R --accept-unsafe-readers-host-wide --skip-selftest --bypass-port ${PORT_BYPASS} --iface lo --intercept '127.0.0.0/8:*' --proxy-port ${PROXY_PORT} --json | tr -d '\\n')"
echo "APP $(client $R/b ${PORT_A} ${MB})"
echo "S3 $(status)"
echo "NESTED $(${accel} attach --cgroup $R/a --json | tr -d '\\n')"
echo "S4 $(status)"
${accel} detach --cgroup $R/a --drain-ms 0 > /dev/null
${accel} detach --cgroup $R --drain-ms 0 > /dev/null
kill -TERM $proxy_pid; wait $proxy_pid || true
echo "PROXYLOG [$(grep '"event":"connection"' ${tmp}/proxy.log | paste -sd,)]"
echo "STOPPED $(grep '"event":"stopped"' ${tmp}/proxy.log | tail -1)"
echo "AFTER $(status)"
echo "LEFT {\\"pins\\": \\"$(pins)\\", \\"hooks\\": $(hooks $R $R/a), \\"rules\\": \\"$(ip rule | grep -c fwmark || true)\\", \\"state\\": \\"$(ls -A ${tmp}/state 2>/dev/null | grep -v '\\.lock$' | tr '\\n' ' ')\\"}"
`;
    const out = await runAtNamespaceRoot(ns, script, 170_000);

    // The self-test found unsafe readers: refused, with the evidence and the option, nothing installed.
    const refused = part<{ code: string; message: string; unsafeReaders: { kind: string; error: string }[] }>(out, 'REFUSED');
    assert.equal(refused.code, 'E_HOST_WIDE_UNSAFE', JSON.stringify(refused));
    assert.match(
      refused.message,
      /^\/sys\/fs\/cgroup is the root cgroup, and this kernel breaks some readers on the fast path: .*splice\(2\) readers get an early end of stream \(self-test: premature EOF/,
    );
    assert.match(refused.message, /nothing was attached.*--accept-unsafe-readers-host-wide$/);
    assert.deepEqual(refused.unsafeReaders.map((u) => u.kind).sort(), ['blocking-after-half-close', 'fionread-behind-held-writer', 'splice']);
    assert.deepEqual(part(out, 'LEFT1'), { pins: '', hooks: [0] }, 'nothing installed, nothing pinned');
    // Without the self-test nobody knows: refused too, before anything.
    const skipped = part<{ code: string; message: string }>(out, 'SKIPREFUSED');
    assert.equal(skipped.code, 'E_HOST_WIDE_UNSAFE');
    assert.match(skipped.message, /without the self-test nobody knows which readers this kernel breaks, for every process of this cgroup namespace/);

    // Accepted: attached, said once what it covers, the unsafe kinds named.
    const accepted = part<{ rc: number; hooks: number[] }>(out, 'ACCEPTRC');
    const text = fs.readFileSync(path.join(tmp, 'accept.txt'), 'utf8');
    assert.equal(accepted.rc, 0, text);
    assert.deepEqual(accepted.hooks, [1]);
    assert.equal(text.split('\n').filter((l) => /covers every process/.test(l)).length, 1, text);
    assert.match(text, /^host-wide: \/sys\/fs\/cgroup is the root cgroup; the fast path covers every process of this cgroup namespace$/m);
    assert.match(text, /^warning: splice\(2\) readers get an early end of stream/m);

    // b -> a: two child cgroups, on the fast path of the root's attachment.
    const R = '/sys/fs/cgroup';
    assert.equal(part<{ ok: boolean }>(out, 'AB').ok, true);
    const [s0, s1, s2] = ['S0', 'S1', 'S2'].map((tag) => part<{ attachments: Attachment[] }>(out, tag)) as [
      { attachments: Attachment[] },
      { attachments: Attachment[] },
      { attachments: Attachment[] },
    ];
    assert.equal(at(s1, R)?.state, 'complete');
    assert.ok(counter(s1, R, 'bytes_redirected') - counter(s0, R, 'bytes_redirected') >= BigInt(2 * MB) - counter(s1, R, 'bytes_held'), JSON.stringify(at(s1, R)?.counters));
    assert.equal(counter(s1, R, 'sockets_inserted') - counter(s0, R, 'sockets_inserted'), 2n, 'both ends of b -> a');
    // b -> c on the bypass port: the normal path.
    assert.equal(part<{ ok: boolean }>(out, 'BYPASS').ok, true);
    assert.equal(counter(s2, R, 'bytes_redirected'), counter(s1, R, 'bytes_redirected'), 'no byte of the bypass port redirected');
    assert.equal(counter(s2, R, 'sockets_inserted'), counter(s1, R, 'sockets_inserted'));
    assert.ok(counter(s2, R, 'sockets_skipped_bypass') > counter(s1, R, 'sockets_skipped_bypass'));
    const verified = part<{ reports: { cgroupPath: string; engaged: boolean; probe: { ok: boolean } | null }[] }>(out, 'VERIFY');
    assert.equal(verified.reports[0]?.cgroupPath, R);
    assert.ok(verified.reports[0]?.engaged && verified.reports[0].probe?.ok, JSON.stringify(verified));

    // Interception at the root: the client in b steered to the proxy, the
    // proxy's own upstream connection (same rule, from the root) not: one
    // connection intercepted, no loop.
    const intercepting = part<{ steps: string[]; hostWide: boolean }>(out, 'INTERCEPT');
    assert.ok(intercepting.steps.includes('install-intercept') && intercepting.hostWide, JSON.stringify(intercepting));
    assert.equal(part<{ ok: boolean }>(out, 'APP').ok, true);
    const s3 = part<{ attachments: Attachment[] }>(out, 'S3');
    const ic = at(s3, R)?.intercept?.counters;
    assert.equal(ic?.connections_intercepted, '1', JSON.stringify(ic));
    assert.ok(BigInt(ic?.proxy_packets_skipped ?? 0) > 0n, "the proxy's upstream SYN was seen and skipped");

    // A child attached with its self-test while the root intercepts
    // 127.0.0.0/8: the self-test's own connections are not caught (they
    // pass, and the proxy saw none of them), and the child owns its sockets.
    const nested = part<{ selftest?: { ok: boolean }[]; steps: string[] }>(out, 'NESTED');
    assert.ok(nested.selftest?.at(-1)?.ok, `the self-test under the root's interception: ${JSON.stringify(nested).slice(0, 3000)}`);
    const s4 = part<{ attachments: Attachment[] }>(out, 'S4');
    assert.equal(at(s4, R)?.intercept?.counters?.connections_intercepted, '1', 'no connection of the self-test intercepted');
    assert.equal(at(s4, `${R}/a`)?.state, 'complete');
    const events = part<{ destination: string }[]>(out, 'PROXYLOG');
    assert.deepEqual(
      events.map((e) => e.destination),
      [`127.0.0.1:${PORT_A}`],
    );
    const stopped = part<{ stats: { loops: number; accepted: number } }>(out, 'STOPPED');
    assert.deepEqual([stopped.stats.loops, stopped.stats.accepted], [0, 1]);

    // Detach: nothing left, inside or out.
    assert.deepEqual(part<{ attachments: unknown[] }>(out, 'AFTER').attachments, []);
    assert.deepEqual(part(out, 'LEFT'), { pins: '', hooks: [0, 0], rules: '0', state: '' });
    assert.deepEqual(queryCgroupPrograms(ns.parent.path, AttachType.CGROUP_SOCK_OPS), []);
  });

  it('a --cgroup that is not there names where cgroup2 is mounted and the command to use', async () => {
    const accel = `${process.execPath} ${CLI}`;
    // Pure cgroup v2, in a private mount namespace: no /sys/fs/cgroup/unified.
    const script = `
set -e
mount -t cgroup2 none /sys/fs/cgroup
echo "UNIFIED $(${accel} attach --cgroup /sys/fs/cgroup/unified --json | tr -d '\\n')"
echo "DETACH $(${accel} detach --cgroup /sys/fs/cgroup/unified/svc --json | tr -d '\\n')"
`;
    const r = await run('unshare', ['-m', '--propagation', 'private', 'bash', '-c', script], { allowFailure: true, timeoutMs: 60_000 });
    assert.equal(r.exitCode, 0, r.stdout + r.stderr);
    const unified = part<{ code: string; message: string }>(r.stdout, 'UNIFIED');
    assert.equal(unified.code, 'E_CGROUP_NOT_FOUND');
    assert.equal(
      unified.message,
      'cgroup /sys/fs/cgroup/unified does not exist; cgroup2 is mounted at /sys/fs/cgroup on this host (its root covers every process of this host): accel attach --cgroup /sys/fs/cgroup',
    );
    const detach = part<{ code: string; message: string }>(r.stdout, 'DETACH');
    assert.equal(detach.code, 'E_CGROUP_NOT_FOUND');
    assert.match(
      detach.message,
      /cgroup2 is mounted at \/sys\/fs\/cgroup on this host, where this cgroup would be \/sys\/fs\/cgroup\/svc \(it does not exist either\): accel detach --cgroup \/sys\/fs\/cgroup\/<a cgroup>$/,
    );

    // The hybrid layout of this machine: a path under a cgroup v1
    // hierarchy names the v2 mount.
    const v2 = cgroup2Root();
    if (v2 !== '/sys/fs/cgroup/unified' || !fs.existsSync('/sys/fs/cgroup/cpu')) return;
    const v1 = await run(process.execPath, [CLI, 'attach', '--cgroup', '/sys/fs/cgroup/cpu'], { allowFailure: true });
    assert.equal(v1.exitCode, 2);
    assert.match(v1.stderr.trim(), /is in a cgroup v1 hierarchy, and accel needs cgroup v2; cgroup2 is mounted at \/sys\/fs\/cgroup\/unified on this host.*\[E_CGROUP_NOT_V2\]$/);
    const missing = await run(process.execPath, [CLI, 'attach', '--cgroup', '/sys/fs/cgroup/cpu/accel-no-such'], { allowFailure: true });
    assert.match(
      missing.stderr.trim(),
      /^accel: cgroup \/sys\/fs\/cgroup\/cpu\/accel-no-such does not exist; cgroup2 is mounted at \/sys\/fs\/cgroup\/unified on this host, where this cgroup would be \/sys\/fs\/cgroup\/unified\/accel-no-such/,
    );
  });
});
