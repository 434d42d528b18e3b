// accel inside a cgroup namespace, as in a container whose /sys/fs/cgroup is
// its own subtree. From the host: a child cgroup P of the real hierarchy,
// and P/app below it. A shell moves itself into P and unshares a cgroup
// namespace (rooted at P), a mount namespace (cgroup2 over /sys/fs/cgroup,
// showing P as its root, and a fresh bpffs), a network namespace (so that
// interception's rules, routes and hooks touch nothing of the host's) and a
// pid namespace (every process it starts dies with it). Inside, app is
// /sys/fs/cgroup/app: one directory below the mount, two levels below the
// hierarchy's root. There: attach, a transfer on the fast path, status,
// interception (which must match app by its true level), detach, and
// nothing left.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { queryCgroupPrograms } from '../../src/bpf/attach.js';
import { AttachType } from '../../src/bpf/uapi.js';
import { INIT_CGROUP_NS_INODE, cgroup2Root, createChildCgroup, removeCgroup } from '../../src/cgroup/cgroup.js';
import { kernelCgroupLevel } from '../../src/cgroup/level.js';
import { PACKAGE_ROOT, SOCKPROBE } from '../../src/paths.js';
import { run } from '../../src/proc/run.js';
import { BPF_DIR, CLI, MB } from '../helpers/env.js';
import { kernelLacks } from '../helpers/features.js';
import { FIXTURES } from '../helpers/intercept.js';

const PROXY_PORT = 15071;
const ECHO_PORT = 7471;

/** The JSON document a line `TAG {...}` of the script's output carries. */
function part<T>(stdout: string, tag: string): T {
  const line = stdout.split('\n').find((l) => l.startsWith(`${tag} `));
  assert.ok(line, `no ${tag} line in:\n${stdout}`);
  try {
    return JSON.parse(line.slice(tag.length + 1)) as T;
  } catch {
    throw new Error(`${tag}: not JSON in:\n${stdout}`);
  }
}

interface Status {
  attachments: {
    cgroupPath: string;
    state: string;
    counters: Record<string, string> | null;
    intercept: { complete: boolean; hookMode: string; filtersPresent: boolean | null; counters: Record<string, string> | null } | null;
  }[];
}

describe('inside a cgroup namespace', { skip: kernelLacks('fastpath', 'intercept') }, () => {
  it('the fast path and interception work on a cgroup of the namespace, and detach leaves nothing', async (t) => {
    const parent = createChildCgroup(cgroup2Root(), 'accel-cgns');
    const app = createChildCgroup(parent.path, 'app');
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-cgns-'));
    t.after(async () => {
      await removeCgroup(app);
      await removeCgroup(parent);
      fs.rmSync(tmp, { recursive: true, force: true });
    });
    const appName = path.basename(app.path);
    // From the host, with the whole hierarchy in view: the level the tc
    // program must be given. Inside, app is one directory below the mount.
    const level = kernelCgroupLevel(app, BPF_DIR);
    assert.equal(level, kernelCgroupLevel(parent, BPF_DIR) + 1);

    const node = process.execPath;
    const accel = `ACCEL_STATE_DIR=${tmp}/state ${node} ${CLI}`;
    // A command run in app ($cg is exported).
    const inApp = (cmd: string) => `bash -c 'echo $$ > $cg/cgroup.procs; exec ${cmd}'`;
    const hooks = `Promise.all([import('${PACKAGE_ROOT}/dist/src/bpf/attach.js'), import('${PACKAGE_ROOT}/dist/src/bpf/uapi.js')]).then(([a, u]) => console.log(JSON.stringify({ sockops: a.queryCgroupPrograms(process.argv[1], u.AttachType.CGROUP_SOCK_OPS).length, tcx: a.tcxProgramIds(1, 'ingress').length + a.tcxProgramIds(1, 'egress').length })))`;
    const readConfig = `import('${PACKAGE_ROOT}/dist/src/intercept/maps.js').then((m) => console.log(JSON.stringify(m.withTproxyMaps(process.argv[1], (x) => x.config()), (k, v) => (typeof v === 'bigint' ? String(v) : v))))`;
    const inner = `
set -e
mount -t cgroup2 none /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
export cg=/sys/fs/cgroup/${appName}
echo "NS {\\"inode\\": $(stat -L -c %i /proc/self/ns/cgroup), \\"cgroup\\": \\"$(grep '^0::' /proc/self/cgroup | cut -d: -f3)\\", \\"app\\": $(stat -c %i $cg)}"
echo "ROOT $(${accel} attach --cgroup /sys/fs/cgroup --skip-selftest --json | tr -d '\\n')"
echo "ATTACH $(${accel} attach --cgroup $cg --skip-selftest --json | tr -d '\\n')"
echo "PROBE $(${inApp(`${SOCKPROBE} pair --bytes ${4 * MB} --back ${MB}`)} | tail -1)"
echo "STATUS $(${accel} status --cgroup $cg --json | tr -d '\\n')"
${accel} --log-format json proxy --port ${PROXY_PORT} --no-splice --grace-ms 200 > ${tmp}/proxy.log 2>&1 &
proxy_pid=$!
${node} ${path.join(FIXTURES, 'remote-server.mjs')} --echo ${ECHO_PORT} > ${tmp}/server.log 2>&1 &
for i in $(seq 100); do [ "$(cat ${tmp}/proxy.log ${tmp}/server.log | grep -c '"event":"listening"')" = 2 ] && break; sleep 0.1; done
echo "INTERCEPT $(${accel} attach --cgroup $cg --skip-selftest --iface lo --intercept 127.0.0.1/32:${ECHO_PORT} --proxy-port ${PROXY_PORT} --json | tr -d '\\n')"
echo "CONFIG $(${node} -e "${readConfig}" /sys/fs/bpf/accel/cgroup-$(stat -c %i $cg))"
echo "APPCLIENT $(${inApp(`${node} ${path.join(FIXTURES, 'node-client.mjs')} 127.0.0.1 ${ECHO_PORT} ${MB}`)})"
echo "ROOTCLIENT $(${node} ${path.join(FIXTURES, 'node-client.mjs')} 127.0.0.1 ${ECHO_PORT} ${MB})"
echo "ISTATUS $(${accel} status --cgroup $cg --json | tr -d '\\n')"
${accel} detach --cgroup $cg --drain-ms 0 > /dev/null
# The proxy ends too: it unregisters its listener and removes its record.
kill -TERM $proxy_pid; wait $proxy_pid
echo "AFTER $(${accel} status --json | tr -d '\\n')"
echo "LEFT {\\"pins\\": \\"$(ls -A /sys/fs/bpf | grep -v '\\.debug$' | tr '\\n' ' ')\\", \\"state\\": \\"$(ls -A ${tmp}/state 2>/dev/null | grep -v '\\.lock$' | tr '\\n' ' ')\\", \\"rules\\": \\"$(ip rule | grep -c fwmark || true)\\", \\"filters\\": \\"$(tc filter show dev lo ingress | grep -c accel || true)\\"}"
echo "HOOKS $(${node} -e "${hooks}" $cg)"
echo "PROXYLOG [$(grep '"event":"connection"' ${tmp}/proxy.log | paste -sd,)]"
`;
    const outer = `echo $$ > ${parent.path}/cgroup.procs && exec unshare --cgroup --mount --net --pid --fork --mount-proc --propagation private bash -c "$0"`;
    const r = await run('bash', ['-c', outer, inner], {
      allowFailure: true,
      timeoutMs: 180_000,
      env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } as Record<string, string>,
    });
    assert.equal(r.exitCode, 0, r.stdout + r.stderr);
    const out = r.stdout;

    // The namespace: not the init one, rooted at the parent, app seen by the same id.
    const ns = part<{ inode: number; cgroup: string; app: number }>(out, 'NS');
    assert.notEqual(ns.inode, INIT_CGROUP_NS_INODE, 'a cgroup namespace of its own');
    assert.equal(ns.cgroup, '/', 'the shell is at the root of its cgroup namespace');
    assert.equal(BigInt(ns.app), app.id, 'a cgroup id is the same inside and out');

    // Its root is host-wide for the namespace: without the self-test,
    // refused before anything is touched, named as the namespace's
    // (hostwide.test.ts attaches there).
    const root = part<{ code: string; message: string }>(out, 'ROOT');
    assert.equal(root.code, 'E_HOST_WIDE_UNSAFE');
    assert.match(root.message, /^\/sys\/fs\/cgroup is the root cgroup: .*for every process of this cgroup namespace; nothing was attached/);

    // The fast path: attached by the namespace's path, carrying a transfer.
    const attached = part<{ cgroup: { path: string; id: string } }>(out, 'ATTACH');
    assert.equal(attached.cgroup.path, `/sys/fs/cgroup/${appName}`);
    assert.equal(BigInt(attached.cgroup.id), app.id);
    assert.equal(part<{ ok: boolean }>(out, 'PROBE').ok, true);
    const status = part<Status>(out, 'STATUS').attachments[0];
    assert.equal(status?.cgroupPath, `/sys/fs/cgroup/${appName}`, 'status finds the cgroup by id inside the namespace');
    assert.equal(status?.state, 'complete');
    // The probe's 5 MB redirected, or held back (the TCP way) if its reader
    // fell behind; 1 MB of room for what a hold leaves uncounted.
    const carried = BigInt(status?.counters?.bytes_redirected ?? 0) + BigInt(status?.counters?.bytes_held ?? 0);
    assert.ok(carried >= BigInt(4 * MB) && BigInt(status?.counters?.bytes_redirected ?? 0) > 0n, JSON.stringify(status?.counters));

    // Interception: configured with the kernel's level of app, not the
    // mount's one directory; so the client in app is intercepted, and the
    // one at the namespace's root is not.
    const config = part<{ cgroupId: string; cgroupLevel: number }>(out, 'CONFIG');
    assert.equal(BigInt(config.cgroupId), app.id);
    assert.equal(config.cgroupLevel, level);
    assert.notEqual(config.cgroupLevel, 1, 'what counting directories below the mount would give');
    assert.equal(part<{ ok: boolean }>(out, 'APPCLIENT').ok, true);
    assert.equal(part<{ ok: boolean }>(out, 'ROOTCLIENT').ok, true);
    const intercepted = part<Status>(out, 'ISTATUS').attachments[0]?.intercept;
    assert.equal(intercepted?.complete, true);
    assert.equal(intercepted?.filtersPresent, true);
    assert.equal(intercepted?.counters?.connections_intercepted, '1', 'the client in app, and only it');
    const events = part<{ destination: string }[]>(out, 'PROXYLOG');
    assert.deepEqual(
      events.map((e) => e.destination),
      [`127.0.0.1:${ECHO_PORT}`],
    );

    // Detach: nothing left, inside or out.
    assert.deepEqual(part<Status>(out, 'AFTER').attachments, []);
    assert.deepEqual(part<Record<string, string>>(out, 'LEFT'), { pins: '', state: '', rules: '0', filters: '0' });
    assert.deepEqual(part<Record<string, number>>(out, 'HOOKS'), { sockops: 0, tcx: 0 });
    // And from the host, once the namespaces are gone.
    assert.deepEqual(queryCgroupPrograms(app.path, AttachType.CGROUP_SOCK_OPS), []);
  });
});
