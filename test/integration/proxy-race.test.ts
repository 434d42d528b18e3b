// accel proxy with the fast path on both its hops (client, proxy and a
// local server in one attached cgroup) and splicing allowed: a client that
// writes before the proxy's accepted socket is established loses the fast
// path's race (its socket stays on TCP for good), while the proxy's
// upstream socket to the local server is on the fast path. Such a pair
// must be relayed: spliced, its bytes would leave the upstream socket by
// sk_msg, past the TCP send stream where the splicer counts what it owes
// before it forwards a half-close, and every close would hang.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { run } from '../../src/proc/run.js';
import { FIXTURES, PROXY_PORT, interceptBench } from '../helpers/intercept.js';

const LOCAL_PORT = 7411;

describe('accel proxy and the fast path race', { timeout: 300_000 }, () => {
  it('connections whose client wrote before the proxy accepted are relayed, not spliced, and each close is forwarded', async (t) => {
    // The seam makes the proxy's listeners defer each accept until the
    // first bytes arrive: every client's first write finds no peer on the
    // fast path (connections_tcp_only).
    process.env.ACCEL_PROXY_DEFER_ACCEPT = '5';
    let b: Awaited<ReturnType<typeof interceptBench>>;
    try {
      b = await interceptBench(t, { attach: false, proxyArgs: ['--splice'] });
    } finally {
      delete process.env.ACCEL_PROXY_DEFER_ACCEPT;
    }
    const a = await b.accel(['attach', '--cgroup', b.cg.path, '--skip-selftest', '--iface', 'lo', '--intercept', `127.0.0.1/32:${LOCAL_PORT}`, '--proxy-port', String(PROXY_PORT)]);
    assert.equal(a.exitCode, 0, a.stderr);
    const n = 200;
    // Server and clients in one process in the cgroup: n connections, 50
    // at a time, each a 4 KB round trip and a close.
    const r = await run(process.execPath, [path.join(FIXTURES, 'shortcut-cases.mjs'), 'many', String(n), '50'], {
      ...b.appWhere,
      allowFailure: true,
      timeoutMs: 90_000,
      env: { PORT: String(LOCAL_PORT), TIMEOUT_MS: '60000' },
    });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    const f = b.fastCounters();
    const modes = b.proxyEvents().map((e) => e.mode ?? e.action);
    t.diagnostic(`modes: ${[...new Set(modes)].map((m) => `${m} ${modes.filter((x) => x === m).length}`).join(', ')}; connections_tcp_only ${f.connections_tcp_only}`);
    assert.ok(line.startsWith('{') && (JSON.parse(line) as { ok: boolean }).ok, `every connection closed with its bytes: ${line || r.stderr}`);
    assert.equal(f.connections_tcp_only, BigInt(n), 'every client lost the race');
    assert.equal(modes.length, n);
    assert.ok(
      modes.every((m) => m === 'relay-fastpath'),
      `relayed, none spliced: ${modes.join(', ')}`,
    );
  });
});
