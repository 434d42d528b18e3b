// Runs the whole test suite with node's test runner, one file at a time
// (the integration tests load BPF programs and make cgroups and namespaces).
// It records the kernel's uptime first so that the last test can look for
// new WARNING/BUG lines in dmesg since then.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const since = readFileSync('/proc/uptime', 'utf8').split(' ')[0];
const args = ['--test', '--test-concurrency=1', '--test-reporter=spec', ...(process.argv.slice(2).length ? process.argv.slice(2) : ['dist/test/'])];
const r = spawnSync(process.execPath, args, { stdio: 'inherit', env: { ...process.env, ACCEL_TEST_DMESG_SINCE: since } });
process.exit(r.status ?? 1);
