// Runs the whole test suite with node's test runner, one file at a time
// (the integration tests load BPF programs and make cgroups and namespaces),
// then asks the kernel: a WARNING, BUG or Oops report about sockmap code
// (tcp_bpf, sk_psock, sock_map, skmsg) logged during the run fails it.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

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
process.exit(status);
