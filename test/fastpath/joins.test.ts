// verify --bpftrace's reading of bpftrace: its output lines into the sockets
// that joined a sockmap, pairs of them into connections, and each join to
// the report of its cgroup (or a cgroup below it). No root, no bpftrace:
// the lines are the ones JOIN_SCRIPT prints.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { JOIN_SCRIPT, cgroupSubtreeIds, installAllowed, joinText, joinedConnections, parseJoinLines, withJoins } from '../../src/fastpath/joins.js';
import type { VerifyReport } from '../../src/fastpath/verify.js';

const OUTPUT = [
  'Attaching 1 probe...',
  'accel-join 21134 4242 4 127.0.0.1 35001 127.0.0.1 40000 sockprobe',
  'accel-join 21134 4243 4 127.0.0.1 40000 127.0.0.1 35001 sockprobe',
  'accel-join 21135 77 6 ::1 8080 ::ffff:10.0.0.2 51000 my worker 1',
  'Lost 3 events',
  'accel-join 21134 abc 4 127.0.0.1 1 127.0.0.1 2 broken',
  '',
];

describe('parseJoinLines', () => {
  const joins = parseJoinLines(OUTPUT);

  it('reads every join line, and nothing else', () => {
    assert.equal(joins.length, 3);
    assert.deepEqual(joins[0], {
      cgroupId: 21134n,
      pid: 4242,
      comm: 'sockprobe',
      family: 'ipv4',
      localAddress: '127.0.0.1',
      localPort: 35001,
      remoteAddress: '127.0.0.1',
      remotePort: 40000,
    });
  });

  it('keeps a comm with spaces whole, reads IPv6 and v4-mapped addresses', () => {
    assert.equal(joins[2]?.comm, 'my worker 1');
    assert.equal(joins[2]?.family, 'ipv6');
    assert.equal(joinText(joins[2]!), '[::1]:8080 -> [::ffff:10.0.0.2]:51000');
    assert.equal(joinText(joins[0]!), '127.0.0.1:35001 -> 127.0.0.1:40000');
  });

  it('reads lines with a carriage return and a missing comm', () => {
    assert.equal(parseJoinLines(['accel-join 1 2 4 127.0.0.1 3 127.0.0.1 4\r'])[0]?.comm, '');
  });

  it('reads what JOIN_SCRIPT prints: its two printf formats have the fields parseJoinLines expects', () => {
    const formats = [...JOIN_SCRIPT.matchAll(/printf\("([^"]*)"/g)].map((m) => m[1]);
    assert.equal(formats.length, 2);
    for (const f of formats) {
      const sample = (f as string)
        .replace('%llu', '9')
        .replace('%d', '1')
        .replace('%s', '10.0.0.1')
        .replace('%d', '2')
        .replace('%s', '10.0.0.2')
        .replace('%d', '3')
        .replace('%s', 'comm')
        .replace('\\n', '');
      assert.equal(parseJoinLines([sample]).length, 1, `a line of the format ${f}`);
    }
  });
});

describe('joinedConnections', () => {
  it('a connection is two joins with mirrored ends, listed once', () => {
    const joins = parseJoinLines(OUTPUT);
    assert.deepEqual(joinedConnections(joins), ['127.0.0.1:35001 <-> 127.0.0.1:40000']);
    assert.deepEqual(joinedConnections([...joins, ...joins]), ['127.0.0.1:35001 <-> 127.0.0.1:40000'], 'a socket seen joining twice');
    assert.deepEqual(joinedConnections(joins.slice(0, 1)), [], 'one end only');
  });
});

describe('withJoins', () => {
  const report = (cgroupPath: string | null, engaged = true): VerifyReport => ({
    cgroupPath,
    engagedConnections: [],
    socketsInMap: 0,
    bytesRedirected: 8n,
    messagesRedirected: 1n,
    backpressure: { engaged: 0n, released: 0n, bytesHeld: 0n },
    probe: null,
    engaged,
  });

  it('gives each report the joins of its cgroup and the cgroups below; engaged needs a connection seen joining', (t) => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-joins-'));
    t.after(() => fs.rmSync(root, { recursive: true, force: true }));
    const a = path.join(root, 'a');
    const below = path.join(a, 'below');
    const b = path.join(root, 'b');
    for (const d of [below, b]) fs.mkdirSync(d, { recursive: true });
    const ino = (d: string) => fs.statSync(d, { bigint: true }).ino;
    assert.deepEqual(cgroupSubtreeIds(a), new Set([ino(a), ino(below)]));

    const line = (cg: bigint, from: number, to: number) => `accel-join ${cg} 1 4 127.0.0.1 ${from} 127.0.0.1 ${to} x`;
    const joins = parseJoinLines([line(ino(a), 1000, 2000), line(ino(below), 2000, 1000), line(ino(b), 3000, 4000)]);
    const [ra, rb, gone] = withJoins([report(a), report(b), report(null)], joins);
    assert.equal(ra?.joins.length, 2);
    assert.deepEqual(ra?.joinedConnections, ['127.0.0.1:1000 <-> 127.0.0.1:2000']);
    assert.equal(ra?.engaged, true);
    assert.equal(rb?.joins.length, 1);
    assert.equal(rb?.engaged, false, 'only one end seen joining');
    assert.deepEqual(gone?.joins, []);
    assert.equal(withJoins([report(a, false)], joins)[0]?.engaged, false, 'the map and counters must agree too');
  });
});

describe('installAllowed', () => {
  it('ACCEL_BPFTRACE_INSTALL=no turns the installation off; anything else leaves it on', () => {
    assert.equal(installAllowed({}), true);
    assert.equal(installAllowed({ ACCEL_BPFTRACE_INSTALL: 'no' }), false);
    assert.equal(installAllowed({ ACCEL_BPFTRACE_INSTALL: 'yes' }), true);
  });
});
