// Name rules bound to the destination (issue 24): with `default deny` and
// only Host and SNI `*.ok.test` allowed, a client in the cgroup reaches the
// server only with a name that the proxy's resolver maps to the server's
// address. The proxy runs in a private mount namespace whose /etc/hosts
// says a.ok.test is the server and b.ok.test another address, and whose
// resolv.conf names a DNS server that does not answer (so every other
// name cannot be verified): the real resolver path, nothing injected.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { run } from '../../src/proc/run.js';
import { kernelLacks } from '../helpers/features.js';
import { ECHO_PORT, HTTP_PORT, SERVER4, SERVER6, curl, interceptBench } from '../helpers/intercept.js';

/** A TLS ClientHello naming `servername` from the application's place;
 * the echo server sends it back, which TLS refuses: only the proxy's log
 * says whether it got through. */
const TLS_CLIENT = `
const tls = require('node:tls');
const s = tls.connect({ host: process.argv[1], port: Number(process.argv[2]), servername: process.argv[3], rejectUnauthorized: false });
s.on('error', (e) => { console.log(e.code ?? e.message); process.exit(0); });
setTimeout(() => { console.log('timeout'); process.exit(0); }, 5000);
`;

describe('name rules bound to the destination address', { skip: kernelLacks('intercept') }, () => {
  it('allows Host and SNI *.ok.test only at an address of that name: /etc/hosts binds, another address or an unresolvable name is refused', async (t) => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-names-'));
    t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
    const hosts = path.join(tmp, 'hosts');
    fs.writeFileSync(hosts, `127.0.0.1 localhost\n${SERVER4} a.ok.test\n${SERVER6} a.ok.test\n10.200.0.99 b.ok.test\n`);
    const resolvConf = path.join(tmp, 'resolv.conf');
    // Nothing listens there in the namespace: every DNS question fails at once.
    fs.writeFileSync(resolvConf, 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
    const policy = path.join(tmp, 'policy.json');
    fs.writeFileSync(
      policy,
      JSON.stringify({
        default: 'deny',
        rules: [
          { action: 'allow', host: '*.ok.test' },
          { action: 'allow', sni: '*.ok.test' },
        ],
      }),
    );
    const b = await interceptBench(t, { proxyArgs: ['--policy', policy], proxyEtc: { hosts, resolvConf } });

    for (const url of [`http://${SERVER4}:${HTTP_PORT}/data/3`, `http://[${SERVER6}]:${HTTP_PORT}/data/3`]) {
      const ok = await curl(b, url, ['-H', 'Host: a.ok.test']);
      assert.equal(ok.exitCode, 0, `a.ok.test at its address (${url}): ${ok.stderr}`);
    }
    const allowedAccepts = b.serverAccepts().length;
    for (const name of ['b.ok.test', 'nowhere.ok.test']) {
      const r = await curl(b, `http://${SERVER4}:${HTTP_PORT}/data/3`, ['-H', `Host: ${name}`]);
      assert.notEqual(r.exitCode, 0, `${name} must not reach ${SERVER4}: ${r.stdout}`);
    }
    // Keep-alive: the second request names b.ok.test on a connection the
    // first (a.ok.test) opened; it is cut before it reaches the server.
    const twice = await run(
      'curl',
      [
        '-sS',
        '-v',
        '--max-time',
        '20',
        '-H',
        'Host: a.ok.test',
        `http://${SERVER4}:${HTTP_PORT}/data/3`,
        '--next',
        '-H',
        'Host: b.ok.test',
        `http://${SERVER4}:${HTTP_PORT}/data/4`,
      ],
      { ...b.appWhere, allowFailure: true, timeoutMs: 30_000 },
    );
    assert.match(twice.stderr, /Re-using existing connection/, 'one connection for both requests');
    assert.notEqual(twice.exitCode, 0, `the second request is refused: ${twice.stderr}`);

    for (const name of ['a.ok.test', 'b.ok.test', 'nowhere.ok.test']) {
      await run(process.execPath, ['-e', TLS_CLIENT, SERVER4, String(ECHO_PORT), name], { ...b.appWhere, timeoutMs: 20_000 });
    }

    const ev = b.proxyEvents();
    const by = (pred: (e: (typeof ev)[number]) => boolean) => ev.filter(pred).map((e) => `${e.action} ${e.reason}`);
    // (curl retries the refused keep-alive request on a new connection: refused too.)
    const bHttp = by((e) => e.host === 'b.ok.test' && !e.reason.includes('request'));
    assert.ok(bHttp.length >= 1 && bHttp.every((x) => x.startsWith('deny default;')), JSON.stringify(ev));
    assert.match(ev.find((e) => e.host === 'b.ok.test')?.reason ?? '', /b\.ok\.test unverified: not an address of b\.ok\.test in \/etc\/hosts/);
    assert.match(ev.find((e) => e.host === 'nowhere.ok.test')?.reason ?? '', /^default; nowhere\.ok\.test unverified: .*(resolver error|no answer)/);
    assert.ok(
      ev.some((e) => e.action === 'deny' && /b\.ok\.test unverified.*request 2/.test(e.reason)),
      `keep-alive request 2 refused: ${JSON.stringify(ev)}`,
    );
    assert.ok(
      ev.some((e) => e.action === 'allow' && e.sni === 'a.ok.test'),
      'SNI a.ok.test at its address',
    );
    for (const name of ['b.ok.test', 'nowhere.ok.test'])
      assert.ok(
        ev.some((e) => e.action === 'deny' && e.sni === name && /unverified/.test(e.reason)),
        `SNI ${name} refused`,
      );
    // The server saw the allowed connections (two curls, the keep-alive
    // one, the a.ok.test hello) and nothing else.
    assert.equal(b.serverAccepts().length, allowedAccepts + 2, JSON.stringify(b.serverAccepts()));
  });
});
