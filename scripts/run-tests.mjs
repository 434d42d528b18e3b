// Runs the whole test suite with node's test runner, one file at a time
// (the integration tests load BPF programs and make cgroups and namespaces),
// then asks the kernel: a WARNING, BUG or Oops report about sockmap code
// (tcp_bpf, sk_psock, sock_map, skmsg) logged during the run fails it.
//
// --unit (npm run test:unit): only the tests that need no root, no BPF
// program loaded, no cgroup and no namespace, in parallel, without the
// kernel check; any user runs them in seconds.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync, rmdirSync, statfsSync } from 'node:fs';

/** Under dist/test/: the rootless tests. A folder here holds no other kind. */
const UNIT = [
  'agent',
  'attachment',
  'bpf',
  'cgroup',
  'intercept',
  'lint',
  'maps',
  'net',
  'proxy',
  'splice',
  'state',
  'stream',
  'sys',
  'helpers/dmesg.test.js',
  'bench/report.test.js',
  'bench/chart.test.js',
  'fastpath/joins.test.js',
];

const unit = process.argv[2] === '--unit';
if (unit) {
  const paths = UNIT.map((p) => `dist/test/${p}`).filter((p) => existsSync(p));
  // bpftool, which the layout test runs, is in /usr/sbin on Debian: not on a user's PATH.
  const env = { ...process.env, PATH: `${process.env.PATH ?? '/usr/bin:/bin'}:/usr/sbin:/sbin` };
  const r = spawnSync(process.execPath, ['--test', '--test-reporter=spec', ...paths, ...process.argv.slice(3)], { stdio: 'inherit', env });
  process.exit(r.status ?? 1);
}

// One run at a time on a machine: two runs share pins, ports, cgroups and
// the machine check below. A run re-executes itself under an exclusive
// flock (util-linux), so a second run waits for the first instead of
// breaking it. The lock file lives outside /run/accel, which is checked.
const LOCK = '/run/lock/accel-tests.lock';
if (!process.env.ACCEL_TESTS_LOCKED) {
  const r = spawnSync('flock', [LOCK, process.execPath, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, ACCEL_TESTS_LOCKED: '1' },
  });
  if (r.error) {
    console.log(`test runner: flock ${LOCK} failed (${r.error.message})`);
    process.exit(1);
  }
  process.exit(r.status ?? 1);
}

// What the run may leave behind, before and after: the entries of the
// default bpffs (and whether it was mounted) and of accel's state directory.
const BPFFS = '/sys/fs/bpf';
const STATE = '/run/accel';
const isBpffs = (dir) => {
  try {
    return statfsSync(dir).type === 0xcafe4a11;
  } catch {
    return false;
  }
};
const entries = (dir) => (existsSync(dir) ? readdirSync(dir).filter((n) => !n.endsWith('.debug') && n !== 'pin-root.lock') : null);
const found = { bpffsMounted: isBpffs(BPFFS), bpffs: entries(BPFFS) ?? [], state: entries(STATE) };

const since = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
const args = ['--test', '--test-concurrency=1', '--test-reporter=spec', ...(process.argv.slice(2).length ? process.argv.slice(2) : ['dist/test/'])];
const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
let status = r.status ?? 1;

const { sockmapTrouble } = await import('../dist/test/helpers/dmesg.js');
const dmesg = spawnSync('dmesg', ['--kernel'], { encoding: 'utf8' });
if (dmesg.status !== 0) {
  console.log(`kernel check: dmesg failed (${(dmesg.stderr ?? '').trim()}); not checked`);
} else {
  const reports = sockmapTrouble(dmesg.stdout.split('\n'), since);
  if (reports.length) {
    console.log(`kernel check: ${reports.length} WARNING/BUG report(s) about sockmap code during the run:\n${reports.map((x) => x.join('\n')).join('\n\n')}`);
    status = status || 1;
  } else {
    console.log('kernel check: no WARNING/BUG report about tcp_bpf, sk_psock, sock_map or skmsg during the run');
  }
}
// The machine as it was found: nothing new in the bpffs or accel's state
// directory (a leftover fails the run, named), and what the run itself set
// up goes: the bpffs it mounted, the state directory it made.
const bpffsLeft = (entries(BPFFS) ?? []).filter((n) => !found.bpffs.includes(n));
const stateLeft = (entries(STATE) ?? []).filter((n) => !(found.state ?? []).includes(n));
if (bpffsLeft.length || stateLeft.length) {
  console.log(`machine check: left behind: ${[...bpffsLeft.map((n) => `${BPFFS}/${n}`), ...stateLeft.map((n) => `${STATE}/${n}`)].join(', ')}`);
  status = status || 1;
} else {
  if (found.state === null && existsSync(STATE)) {
    rmSync(`${STATE}/pin-root.lock`, { force: true });
    rmdirSync(STATE);
  }
  if (!found.bpffsMounted && isBpffs(BPFFS) && !(entries(BPFFS) ?? []).length) spawnSync('umount', [BPFFS]);
  console.log('machine check: nothing left in the bpffs or /run/accel');
}
process.exit(status);
