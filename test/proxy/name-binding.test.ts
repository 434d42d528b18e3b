/** A name (SNI, Host) counts only when the destination is an address of
 * it: the resolver's answer (a hosts file and a scripted DNS here), its
 * caching within TTLs and bounds, and the policy's use of it. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { decideWithBinding } from '../../src/proxy/admission.js';
import { type Binding, type DnsAnswer, NameBinder, parseHosts } from '../../src/proxy/name-binding.js';
import { Policy } from '../../src/proxy/policy.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-names-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let files = 0;
function hostsFile(text: string): string {
  const f = path.join(dir, `hosts-${files++}`);
  fs.writeFileSync(f, text);
  return f;
}

/** A DNS that answers from `zone` (name -> answer) and counts questions;
 * a name missing from the zone does not exist. */
function scriptedDns(zone: Record<string, DnsAnswer | 'hang'>) {
  const asked: string[] = [];
  const query = (name: string, family: 4 | 6): Promise<DnsAnswer> => {
    asked.push(`${family}:${name}`);
    const a = zone[name];
    if (a === 'hang') return new Promise(() => {});
    return Promise.resolve(a ?? { missing: true });
  };
  return { asked, query };
}

function clock() {
  const c = { t: 1_000_000, now: () => c.t };
  return c;
}

describe('name binding', () => {
  it('binds an address given as the name to itself only', async () => {
    const b = new NameBinder({ hostsFile: hostsFile(''), dns: scriptedDns({}).query });
    assert.deepEqual(await b.check('10.200.0.2', '10.200.0.2'), { bound: true, source: 'address' });
    assert.equal((await b.check('10.200.0.3', '10.200.0.2')).bound, false);
    assert.equal((await b.check('fd00:200::2', 'fd00:200:0:0::2')).bound, true);
  });

  it('answers from the hosts file first, without asking DNS, and sees the file change', async () => {
    const c = clock();
    const file = hostsFile('# comment\n10.200.0.2  a.ok.test  alias.ok.test # trailing\nfd00:200::2 a.ok.test\n10.200.0.9 b.ok.test\nnot-an-address x.ok.test\n');
    const dns = scriptedDns({ 'a.ok.test': { addresses: [{ address: '10.200.0.9', ttl: 60 }] } });
    const b = new NameBinder({ hostsFile: file, dns: dns.query, now: c.now });
    assert.deepEqual(await b.check('a.ok.test', '10.200.0.2'), { bound: true, source: 'hosts' });
    assert.deepEqual(await b.check('alias.ok.test', '10.200.0.2'), { bound: true, source: 'hosts' });
    assert.equal((await b.check('a.ok.test', 'fd00:200::2')).bound, true);
    assert.equal((await b.check('a.ok.test', '10.200.0.9')).bound, false, 'DNS would say yes, but the hosts file has the name');
    assert.equal((await b.check('b.ok.test', '10.200.0.2')).bound, false);
    assert.deepEqual(dns.asked, []);
    fs.writeFileSync(file, '10.200.0.2 b.ok.test\n');
    c.t += 1000;
    assert.equal((await b.check('b.ok.test', '10.200.0.2')).bound, true, 'the changed file is read again');
    assert.deepEqual(parseHosts('::1 localhost ip6-LOCALHOST.\n').get('ip6-localhost')?.size, 1);
  });

  it('asks DNS for the destination family, keeps the answer for its TTL (capped), then asks again', async () => {
    const c = clock();
    const dns = scriptedDns({
      'a.ok.test': { addresses: [{ address: '10.200.0.2', ttl: 30 }] },
      'long.ok.test': { addresses: [{ address: '10.200.0.2', ttl: 86_400 }] },
    });
    const b = new NameBinder({ hostsFile: hostsFile(''), dns: dns.query, now: c.now });
    assert.deepEqual(await b.check('a.ok.test', '10.200.0.2'), { bound: true, source: 'dns' });
    c.t += 29_000;
    assert.equal((await b.check('a.ok.test', '10.200.0.2')).bound, true);
    assert.deepEqual(dns.asked, ['4:a.ok.test'], 'within the TTL: from the cache');
    c.t += 2_000;
    assert.equal((await b.check('a.ok.test', '10.200.0.2')).bound, true);
    assert.deepEqual(dns.asked, ['4:a.ok.test', '4:a.ok.test'], 'past the TTL: asked again');
    await b.check('long.ok.test', '10.200.0.2');
    c.t += 301_000;
    await b.check('long.ok.test', '10.200.0.2');
    assert.equal(dns.asked.filter((q) => q === '4:long.ok.test').length, 2, 'a day-long TTL is kept 5 minutes');
    await b.check('a.ok.test', 'fd00:200::2');
    assert.ok(dns.asked.includes('6:a.ok.test'), 'an IPv6 destination asks AAAA');
  });

  it('is not bound to an address outside the answer; asks again for it at most once a second, and keeps a rotating pool', async () => {
    const c = clock();
    const zone: Record<string, DnsAnswer> = { 'pool.ok.test': { addresses: [{ address: '10.0.0.1', ttl: 60 }] } };
    const dns = scriptedDns(zone);
    const b = new NameBinder({ hostsFile: hostsFile(''), dns: dns.query, now: c.now });
    assert.equal((await b.check('pool.ok.test', '10.0.0.1')).bound, true);
    const other = await b.check('pool.ok.test', '10.0.0.2');
    assert.equal(other.bound, false);
    assert.match((other as { why: string }).why, /not an address of pool\.ok\.test/);
    assert.equal(dns.asked.length, 1, 'asked just now: not again');
    zone['pool.ok.test'] = { addresses: [{ address: '10.0.0.2', ttl: 60 }] };
    c.t += 1000;
    assert.equal((await b.check('pool.ok.test', '10.0.0.2')).bound, true, 'asked again, the new answer binds');
    assert.equal((await b.check('pool.ok.test', '10.0.0.1')).bound, true, 'the earlier answer still holds within its TTL');
    assert.equal(dns.asked.length, 2);
  });

  it('treats a missing name, a resolver error, a timeout and a full resolver as not bound', async () => {
    const c = clock();
    const dns = scriptedDns({ 'err.ok.test': { error: 'ESERVFAIL' }, 'slow.ok.test': 'hang', 'slow2.ok.test': 'hang' });
    const b = new NameBinder({ hostsFile: hostsFile(''), dns: dns.query, now: c.now, timeoutMs: 50, maxInFlight: 2 });
    const missing = await b.check('nowhere.ok.test', '10.0.0.1');
    assert.match((missing as { why: string }).why, /no such name/);
    c.t += 4000;
    await b.check('nowhere.ok.test', '10.0.0.1');
    assert.equal(dns.asked.filter((q) => q.endsWith('nowhere.ok.test')).length, 1, 'a missing name is remembered for a while');
    assert.match(((await b.check('err.ok.test', '10.0.0.1')) as { why: string }).why, /ESERVFAIL/);
    assert.match(((await b.check('slow.ok.test', '10.0.0.1')) as { why: string }).why, /no answer .* within 50 ms/);
    assert.match(((await b.check('slow2.ok.test', '10.0.0.1')) as { why: string }).why, /no answer/);
    assert.match(((await b.check('third.ok.test', '10.0.0.1')) as { why: string }).why, /busy/, 'two questions hang: a third is not asked');
  });

  it('keeps at most maxEntries names, dropping the least recently used', async () => {
    const c = clock();
    const zone = Object.fromEntries(['a', 'b', 'c'].map((n) => [`${n}.ok.test`, { addresses: [{ address: '10.0.0.1', ttl: 60 }] }]));
    const dns = scriptedDns(zone);
    const b = new NameBinder({ hostsFile: hostsFile(''), dns: dns.query, now: c.now, maxEntries: 2 });
    await b.check('a.ok.test', '10.0.0.1');
    await b.check('b.ok.test', '10.0.0.1');
    await b.check('a.ok.test', '10.0.0.1'); // a is now the most recent
    await b.check('c.ok.test', '10.0.0.1'); // b goes
    await b.check('a.ok.test', '10.0.0.1');
    assert.equal(dns.asked.length, 3, 'a stayed cached');
    await b.check('b.ok.test', '10.0.0.1');
    assert.equal(dns.asked.length, 4, 'b was dropped');
  });
});

describe('policy with name binding', () => {
  const allowList = Policy.parse({
    default: 'deny',
    rules: [
      { action: 'allow', destination: '10.9.0.0/16' },
      { action: 'allow', host: '*.ok.test' },
      { action: 'allow', sni: '*.ok.test' },
    ],
  });
  const blockList = Policy.parse({ rules: [{ action: 'deny', sni: 'blocked.test' }] });
  const bindTo = (addresses: Record<string, string>) => {
    const asked: string[] = [];
    const bind = (name: string, destination: string): Promise<Binding> => {
      asked.push(name);
      return Promise.resolve(addresses[name] === destination ? { bound: true, source: 'dns' } : { bound: false, why: `not an address of ${name}` });
    };
    return { asked, bind };
  };

  it('allows a name only at an address of that name', async () => {
    const { bind } = bindTo({ 'a.ok.test': '10.200.0.2' });
    const ok = await decideWithBinding(allowList, { destination: '10.200.0.2', port: 8080, protocol: 'http', host: 'a.ok.test' }, bind);
    assert.equal(ok.decision.action, 'allow');
    const elsewhere = await decideWithBinding(allowList, { destination: '10.200.0.3', port: 8080, protocol: 'http', host: 'a.ok.test' }, bind);
    assert.equal(elsewhere.decision.action, 'deny');
    assert.match(elsewhere.decision.reason, /^default; a\.ok\.test unverified: not an address of a\.ok\.test/);
    const sni = await decideWithBinding(allowList, { destination: '10.200.0.3', port: 443, protocol: 'tls', sni: 'x.ok.test' }, bind);
    assert.equal(sni.decision.action, 'deny');
  });

  it('decides `unknown` for a deny-by-name rule when another name is sent to an address that is not its', async () => {
    const { bind } = bindTo({ 'blocked.test': '10.0.0.9', 'fine.test': '10.0.0.1' });
    const sneaky = await decideWithBinding(blockList, { destination: '10.0.0.9', port: 443, protocol: 'tls', sni: 'fine.test' }, bind);
    assert.equal(sneaky.decision.action, 'deny');
    assert.match(sneaky.decision.reason, /^unknown sni \(rule 1\); fine\.test unverified/);
    const fine = await decideWithBinding(blockList, { destination: '10.0.0.1', port: 443, protocol: 'tls', sni: 'fine.test' }, bind);
    assert.equal(fine.decision.action, 'allow');
  });

  it('asks the resolver only when the name changes the decision', () => {
    const { asked, bind } = bindTo({});
    const byDestination = decideWithBinding(allowList, { destination: '10.9.1.1', port: 80, protocol: 'http', host: 'a.ok.test' }, bind);
    assert.ok(!(byDestination instanceof Promise) && byDestination.decision.action === 'allow', 'a destination rule first');
    const noMatch = decideWithBinding(allowList, { destination: '10.200.0.2', port: 80, protocol: 'http', host: 'evil.test' }, bind);
    assert.ok(!(noMatch instanceof Promise) && noMatch.decision.action === 'deny', 'no rule names it either way');
    assert.deepEqual(asked, []);
  });

  it('never lets an unbound name earn an allow the connection would not get without a name', async () => {
    const names = fc.constantFrom('a.ok.test', 'b.ok.test', 'blocked.test', 'evil.test', '10.200.0.2');
    const dests = fc.constantFrom('10.200.0.2', '10.200.0.3', '10.9.0.1');
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(allowList, blockList),
        names,
        dests,
        fc.constantFrom<'tls' | 'http'>('tls', 'http'),
        fc.boolean(),
        async (policy, name, destination, protocol, bound) => {
          const facts = { destination, port: 443, protocol, ...(protocol === 'tls' ? { sni: name } : { host: name }) };
          const bind = (): Promise<Binding> => Promise.resolve(bound ? { bound: true, source: 'dns' } : { bound: false, why: 'no' });
          const { decision } = await decideWithBinding(policy, facts, bind);
          const nameless = policy.decide({ destination, port: 443, protocol });
          if (!bound) assert.equal(decision.action, nameless.action);
          else assert.equal(decision.action, policy.decide(facts).action);
        },
      ),
      { numRuns: 300 },
    );
  });
});
