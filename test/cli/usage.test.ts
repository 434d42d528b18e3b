// The command line's conventions: every usage error is one line and exit
// status 2, or one JSON object on stdout under --json; --help and --version
// succeed. Every case fails in commander's parsing, before any action runs.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { type CliResult, cli } from './cli.js';

function assertUsageLine(r: CliResult, pattern: RegExp): void {
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stdout, '');
  const lines = r.stderr.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, `one line, not the help: ${r.stderr}`);
  assert.match(lines[0] ?? '', /^accel: .+ \[E_USAGE\]$/);
  assert.match(lines[0] ?? '', pattern);
}

function assertUsageJson(r: CliResult, pattern: RegExp): void {
  assert.equal(r.status, 2, r.stdout + r.stderr);
  assert.equal(r.stderr, '');
  const doc = JSON.parse(r.stdout) as Record<string, unknown>;
  assert.deepEqual(Object.keys(doc).sort(), ['code', 'message']);
  assert.equal(doc.code, 'E_USAGE');
  assert.match(String(doc.message), pattern);
  assert.doesNotMatch(String(doc.message), /^error:/);
}

// One usage error per command; `json` when the command takes --json.
const cases: { command: string; args: string[]; message: RegExp; json: boolean }[] = [
  { command: 'attach', args: ['attach'], message: /required option '--cgroup <path>'/, json: true },
  { command: 'attach', args: ['attach', '--cgroup', '/nonexistent', '--bypass-port', '70000'], message: /"70000" is not a TCP port/, json: true },
  { command: 'attach', args: ['attach', '--cgroup', '/nonexistent', '--stream-verdict', 'sometimes'], message: /Allowed choices are auto, always/, json: true },
  { command: 'detach', args: ['detach'], message: /detach needs --cgroup <path> or --cgroup-id <id>/, json: true },
  { command: 'detach', args: ['detach', '--cgroup-id', 'abc'], message: /"abc" is not a cgroup id/, json: true },
  { command: 'detach', args: ['detach', '--cgroup', '/nonexistent', '--drain-ms', 'soon'], message: /"soon" is not a non-negative integer/, json: true },
  { command: 'status', args: ['status', '--bogus'], message: /unknown option '--bogus'/, json: true },
  // Not under --json: `--cgroup --json` makes "--json" the path.
  { command: 'verify', args: ['verify', '--cgroup'], message: /option '--cgroup <path>' argument missing/, json: false },
  { command: 'verify', args: ['verify', '--probe', 'extra'], message: /too many arguments for 'verify'/, json: true },
  { command: 'selftest', args: ['selftest', '--bogus'], message: /unknown option '--bogus'/, json: true },
  { command: 'demo', args: ['demo', 'extra'], message: /too many arguments for 'demo'/, json: true },
  { command: 'bench', args: ['bench', '--rounds', '0'], message: /"0" is not a whole number from 1 to 50/, json: true },
  { command: 'proxy', args: ['proxy'], message: /required option '--port <port>'/, json: false },
  { command: 'echo', args: ['echo', '--port', '0'], message: /"0" is not a TCP port/, json: false },
  { command: 'relay', args: ['relay', '--port', '15001', '--pair-timeout-ms', '-1'], message: /"-1" is not a non-negative integer/, json: false },
  { command: 'proxy', args: ['proxy', '--port', '15001', '--max-connections', 'many'], message: /"many" is not a non-negative integer/, json: false },
  { command: 'echo', args: ['echo', '--port', '15001', '--idle-timeout-ms', '1.5'], message: /"1.5" is not a non-negative integer/, json: false },
];

describe('usage errors: one line on stderr, E_USAGE, exit status 2', () => {
  for (const c of cases) {
    it(`${c.command}: ${c.args.slice(1).join(' ') || '(no options)'}`, async () => {
      assertUsageLine(await cli(c.args), c.message);
    });
  }

  it('an unknown command', async () => {
    assertUsageLine(await cli(['nosuch']), /unknown command 'nosuch'/);
  });

  it('no command at all', async () => {
    assertUsageLine(await cli([]), /no known command given/);
  });

  it('a bad choice for a global option', async () => {
    assertUsageLine(await cli(['--log-level', 'loud', 'status']), /Allowed choices are error, warn, info, verbose, debug/);
  });

  it('commands without --json do not take it', async () => {
    assertUsageLine(await cli(['proxy', '--port', '15001', '--json']), /unknown option '--json'/);
  });
});

describe('usage errors under --json: one JSON object on stdout, nothing on stderr, exit status 2', () => {
  for (const c of cases.filter((x) => x.json)) {
    it(`${c.command}: ${c.args.slice(1).join(' ') || '(no options)'} --json`, async () => {
      assertUsageJson(await cli([...c.args, '--json']), c.message);
    });
  }

  it('--json before the failing option counts too', async () => {
    assertUsageJson(await cli(['detach', '--json', '--drain-ms', 'soon', '--cgroup', '/nonexistent']), /"soon" is not a non-negative integer/);
  });

  it('a bad global option before a command given --json', async () => {
    assertUsageJson(await cli(['--log-level', 'loud', 'status', '--json']), /Allowed choices/);
  });
});

describe('--help and --version', () => {
  it('--version prints the version in package.json and exits 0', async () => {
    const { version } = JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = await cli(['--version']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, `${version}\n`);
    assert.equal(r.stderr, '');
  });

  it('--help prints the help on stdout and exits 0, for the program and a command', async () => {
    for (const args of [['--help'], ['detach', '--help'], ['help', 'status']]) {
      const r = await cli(args);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /^Usage: accel/);
      assert.equal(r.stderr, '');
    }
  });
});
