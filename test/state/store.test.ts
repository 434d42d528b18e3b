// The state store: every file in /run/accel is read through a schema and
// written atomically. Rootless: a temporary directory stands for /run/accel.
// A real crash between write and rename (SIGKILL at the failpoint, in a
// child process) leaves the old file whole and only a temporary file,
// which the next write removes.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

const base = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-state-'));
const dir = path.join(base, 'state');
process.env.ACCEL_STATE_DIR = dir;
after(() => fs.rmSync(base, { recursive: true, force: true }));
const { readState, removeState, stateKind, writeState } = await import('../../src/state/store.js');
const { isAccelError } = await import('../../src/errors.js');
const { readRecord, saveRecord, ownPins } = await import('../../src/intercept/record.js');
const { readSelftestRecord } = await import('../../src/attachment/selftest-record.js');
const { readProxyRecord } = await import('../../src/proxy/record.js');
const { interceptRecordPath, selftestRecordPath, proxyRecordPath, listInterceptRecordIds } = await import('../../src/paths.js');
type InterceptRecord = import('../../src/intercept/record.js').InterceptRecord;

const Point = stateKind('test point', z.object({ x: z.number(), y: z.number() }));
const file = path.join(dir, 'point.json');

function isState(re: RegExp) {
  return (err: unknown) => isAccelError(err, 'E_STATE') && re.test(err.message);
}

function record(cgroupId: string, pinDir: string): InterceptRecord {
  return {
    version: 2,
    cgroupId,
    cgroupPath: '/sys/fs/cgroup/x',
    netns: 4026531840,
    settings: {
      ifaces: ['eth0'],
      rules: [{ text: '10.0.0.0/8:80', address: '10.0.0.0', prefixLength: 8, family: 'ipv4', portMin: 80, portMax: 80 }],
      proxyPort: 15001,
      interceptMark: 1,
      proxyMark: 2,
      table: 2764,
      priority: 2764,
      maxFlows: 16,
      proxyPid: null,
      udp: 'pass',
    },
    complete: true,
    added: {
      acceptLocal: '0',
      routes: [{ family: 4, table: 2764 }],
      rules: [{ family: 4, priority: 2764, mark: 1, table: 2764 }],
      hooks: [{ mode: 'tcx', dev: 'lo', ifindex: 1, direction: 'ingress', linkPin: path.join(pinDir, 'link_tc_lo_ingress') }],
      pins: [path.join(pinDir, 'prog_tc_egress'), path.join(pinDir, 'accel_tproxy_flows')],
    },
  };
}

describe('state store', () => {
  it('writes and reads back through the schema; absent is null; remove is idempotent', () => {
    assert.equal(readState(file, Point), null);
    writeState(file, Point, { x: 1, y: 2 });
    assert.deepEqual(readState(file, Point), { x: 1, y: 2 });
    assert.equal((fs.statSync(file).mode & 0o777).toString(8), '600');
    assert.deepEqual(fs.readdirSync(dir), ['point.json'], 'no temporary file left');
    removeState(file);
    removeState(file);
    assert.equal(readState(file, Point), null);
  });

  it('a file that is not JSON, or not of its kind, is E_STATE naming the file', () => {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(file, '{"x": 1, "y"');
    assert.throws(() => readState(file, Point), isState(new RegExp(`test point ${file} is not JSON`)));
    fs.writeFileSync(file, '{"x": 1, "y": "two"}');
    assert.throws(() => readState(file, Point), isState(new RegExp(`test point ${file} is not one accel can use: y:`)));
    fs.writeFileSync(file, '');
    assert.throws(() => readState(file, Point), isState(/not JSON/));
    removeState(file);
  });

  it('refuses to write what it could not read back', () => {
    assert.throws(() => writeState(file, Point, { x: 1, y: 'no' } as unknown as { x: number; y: number }), /refusing to write an invalid test point/);
    assert.equal(fs.existsSync(file), false);
  });

  it('a crash between write and rename leaves the old file whole; the next write removes the temporary file', () => {
    writeState(file, Point, { x: 1, y: 1 });
    const store = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/state/store.js');
    const script = `const { writeState, stateKind } = await import(${JSON.stringify(store)});
      const { z } = await import('zod');
      writeState(${JSON.stringify(file)}, stateKind('test point', z.object({ x: z.number(), y: z.number() })), { x: 9, y: 9 });`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...process.env, ACCEL_FAILPOINT: 'state-before-rename' },
      cwd: path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..'),
    });
    assert.equal(r.signal, 'SIGKILL', `killed at the failpoint: ${String(r.stderr)}`);
    assert.deepEqual(readState(file, Point), { x: 1, y: 1 }, 'the old content, whole');
    const temps = fs.readdirSync(dir).filter((n) => n.endsWith('.tmp'));
    assert.equal(temps.length, 1, 'the dead writer left its temporary file');
    assert.match(temps[0] ?? '', /^\.point\.json\.\d+\.[0-9a-f]+\.tmp$/);
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(dir, temps[0] ?? ''), 'utf8')), { x: 9, y: 9 }, 'written and fsynced before the rename');
    writeState(file, Point, { x: 2, y: 2 });
    assert.deepEqual(fs.readdirSync(dir), ['point.json'], 'the next write removed it');
    assert.deepEqual(readState(file, Point), { x: 2, y: 2 });
    removeState(file);
  });

  it('a corrupt interception record is E_STATE; a temporary file is never listed as a record', () => {
    const pinDir = '/sys/fs/bpf/accel/cgroup-41';
    saveRecord(record('41', pinDir));
    assert.deepEqual(readRecord(41n)?.added.pins, [path.join(pinDir, 'prog_tc_egress'), path.join(pinDir, 'accel_tproxy_flows')]);
    fs.writeFileSync(path.join(dir, '.intercept-cgroup-42.json.1.ab.tmp'), '{');
    assert.deepEqual(listInterceptRecordIds(), [41n]);
    fs.rmSync(path.join(dir, '.intercept-cgroup-42.json.1.ab.tmp'));
    const text = fs.readFileSync(interceptRecordPath(41n), 'utf8');
    fs.writeFileSync(interceptRecordPath(41n), text.slice(0, text.length / 2));
    assert.throws(() => readRecord(41n), isState(new RegExp(`interception record ${interceptRecordPath(41n)} is not JSON`)));
    // A value written to a sysctl as root must be digits.
    fs.writeFileSync(interceptRecordPath(41n), text.replace('"acceptLocal": "0"', '"acceptLocal": "1\\n2"'));
    assert.throws(() => readRecord(41n), isState(/added\.acceptLocal/));
    // Another cgroup's record under this cgroup's name.
    fs.writeFileSync(interceptRecordPath(41n), text.replace('"cgroupId": "41"', '"cgroupId": "7"'));
    assert.throws(() => readRecord(41n), isState(/speaks of cgroup 7/));
    fs.rmSync(interceptRecordPath(41n));
  });

  it("added.pins: only files directly in the attachment's own pin directory", () => {
    const pinDir = '/sys/fs/bpf/accel/cgroup-41';
    const ok = record('41', pinDir);
    assert.deepEqual(ownPins(ok, pinDir), [...ok.added.pins, path.join(pinDir, 'link_tc_lo_ingress')]);
    for (const bad of ['/etc/shadow', `${pinDir}/../cgroup-42/prog_tc_egress`, '/sys/fs/bpf/accel/cgroup-42/prog_tc_egress', `${pinDir}/sub/x`, pinDir, `${pinDir}/.`]) {
      const r = record('41', pinDir);
      r.added.pins.push(bad);
      assert.throws(() => ownPins(r, pinDir), isState(/not in its attachment's pin directory/), bad);
    }
    const link = record('41', pinDir);
    const hook = link.added.hooks[0];
    if (hook?.mode === 'tcx') hook.linkPin = '/run/accel/pin-root.lock';
    assert.throws(() => ownPins(link, pinDir), isState(/pin-root\.lock/));
    // A relative path does not even pass the schema.
    saveRecord(ok);
    fs.writeFileSync(interceptRecordPath(41n), fs.readFileSync(interceptRecordPath(41n), 'utf8').replace(`"${pinDir}/prog_tc_egress"`, '"prog_tc_egress"'));
    assert.throws(() => readRecord(41n), isState(/added\.pins\.0: not an absolute path/));
    fs.rmSync(interceptRecordPath(41n));
  });

  it('a corrupt self-test record says why it cannot be used; a corrupt proxy record is no proxy', () => {
    fs.writeFileSync(selftestRecordPath(5n), '{"version":1,"tested":true}');
    const st = readSelftestRecord(5n);
    assert.equal(st.record, null);
    assert.match(st.record === null ? st.why : '', /self-test record .* is not one accel can use/);
    fs.rmSync(selftestRecordPath(5n));
    fs.writeFileSync(proxyRecordPath(1, 15001), '{"version":1,"pid":"me"}');
    assert.equal(readProxyRecord(15001, 1), null);
    fs.rmSync(proxyRecordPath(1, 15001));
  });
});
