/**
 * Running a shell script at the root of a cgroup namespace of its own, so
 * that what a test attaches to "the root cgroup" is a child cgroup of the
 * real hierarchy, never the host's root. From the host: a child cgroup P,
 * removed when the test ends. A shell moves itself into P and unshares a
 * cgroup namespace (rooted at P), a mount namespace (cgroup2 over
 * /sys/fs/cgroup, showing P as its root, and a fresh bpffs), a network
 * namespace and a pid namespace (every process it starts dies with it).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { TestContext } from 'node:test';
import { type Cgroup, cgroup2Root, createChildCgroup, removeCgroup } from '../../src/cgroup/cgroup.js';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { run } from '../../src/proc/run.js';
import { CLI } from './env.js';
import { FIXTURES } from './intercept.js';

export interface NamespaceRoot {
  /** P, the namespace's root cgroup, as the host sees it. */
  parent: Cgroup;
  /** A directory for the script's files (state, logs), removed afterwards. */
  tmp: string;
  /** `accel` in the script: the CLI with a state directory of its own. */
  accel: string;
  node: string;
  /** Lines that start the script: mounts, lo up, helper functions. */
  prelude: string;
}

/** P, a state directory, and the prelude every script starts with. */
export function namespaceRoot(t: TestContext, name: string): NamespaceRoot {
  const parent = createChildCgroup(cgroup2Root(), name);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `${name}-`));
  t.after(async () => {
    // Children the script made (and did not remove) first.
    for (const e of fs.existsSync(parent.path) ? fs.readdirSync(parent.path, { withFileTypes: true }) : []) {
      if (!e.isDirectory()) continue;
      for (const g of fs.readdirSync(path.join(parent.path, e.name), { withFileTypes: true })) {
        if (g.isDirectory()) await removeCgroup({ path: path.join(parent.path, e.name, g.name), id: 0n });
      }
      await removeCgroup({ path: path.join(parent.path, e.name), id: 0n });
    }
    await removeCgroup(parent);
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  const node = process.execPath;
  const accel = `ACCEL_STATE_DIR=${tmp}/state ${node} ${CLI}`;
  const prelude = `
set -e
mount -t cgroup2 none /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
R=/sys/fs/cgroup
# run CGROUP CMD...: CMD in that cgroup (a child shell moves itself first)
run() { local cg=$1; shift; bash -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$cg" "$@"; }
# start CGROUP LOG CMD...: the same in the background; its pid in $!
start() { local cg=$1 log=$2; shift 2; bash -c 'echo $$ > "$0/cgroup.procs"; exec "$@"' "$cg" "$@" > "$log" 2>&1 & }
# waitfor FILE N: until FILE has N "listening" events
waitfor() { for i in $(seq 100); do [ "$(cat $1 2>/dev/null | grep -c '"event":"listening"')" -ge $2 ] && return 0; sleep 0.1; done; echo "timeout waiting for $1" >&2; return 1; }
echo_server() { start "$1" "$2" ${node} ${path.join(FIXTURES, 'remote-server.mjs')} --echo "$3"; }
client() { run "$1" ${node} ${path.join(FIXTURES, 'node-client.mjs')} 127.0.0.1 "$2" "$3"; }
status() { ${accel} status --json | tr -d '\\n'; }
hooks() { ${node} -e "Promise.all([import('${PACKAGE_ROOT}/dist/src/bpf/attach.js'), import('${PACKAGE_ROOT}/dist/src/bpf/uapi.js')]).then(([a, u]) => console.log(JSON.stringify(process.argv.slice(1).map((c) => a.queryCgroupPrograms(c, u.AttachType.CGROUP_SOCK_OPS).length))))" "$@"; }
pins() { ls -A /sys/fs/bpf | grep -v '\\.debug$' | tr '\\n' ' '; }
`;
  return { parent, tmp, accel, node, prelude };
}

/** Run `script` (after the prelude) at the root of the namespace. */
export async function runAtNamespaceRoot(ns: NamespaceRoot, script: string, timeoutMs = 150_000): Promise<string> {
  const outer = `echo $$ > ${ns.parent.path}/cgroup.procs && exec unshare --cgroup --mount --net --pid --fork --mount-proc --propagation private bash -c "$0"`;
  const r = await run('bash', ['-c', outer, ns.prelude + script], {
    allowFailure: true,
    timeoutMs,
    env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } as Record<string, string>,
  });
  assert.equal(r.exitCode, 0, r.stdout + r.stderr);
  return r.stdout;
}

/** The JSON document a line `TAG {...}` of the script's output carries. */
export function part<T>(stdout: string, tag: string): T {
  const line = stdout.split('\n').find((l) => l.startsWith(`${tag} `));
  assert.ok(line, `no ${tag} line in:\n${stdout}`);
  try {
    return JSON.parse(line.slice(tag.length + 1)) as T;
  } catch {
    throw new Error(`${tag}: not JSON in:\n${stdout}`);
  }
}

/** Every `TAG ...` line's text. */
export function lines(stdout: string, tag: string): string[] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith(`${tag} `))
    .map((l) => l.slice(tag.length + 1));
}
