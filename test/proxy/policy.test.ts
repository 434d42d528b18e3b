import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isAccelError } from '../../src/errors.js';
import { Policy } from '../../src/proxy/policy.js';

describe('proxy policy', () => {
  const p = Policy.parse({
    default: 'deny',
    rules: [
      { action: 'deny', destination: '10.0.0.9/32', name: 'blocked host' },
      { action: 'allow', destination: ['10.0.0.0/8', 'fd00::/8'], ports: ['80', '8000-8100'] },
      { action: 'allow', sni: '*.example.com', splice: false },
      { action: 'allow', host: 'api.test' },
    ],
  });

  it('first matching rule decides, default otherwise', () => {
    assert.deepEqual(p.decide({ destination: '10.0.0.9', port: 80 }), { action: 'deny', reason: 'rule 1 (blocked host)', splice: true, dependsOnHost: false });
    assert.equal(p.decide({ destination: '10.1.2.3', port: 8050 }).action, 'allow');
    assert.equal(p.decide({ destination: 'fd00::5', port: 80 }).action, 'allow');
    assert.equal(p.decide({ destination: '10.1.2.3', port: 443 }).reason, 'default');
    assert.equal(p.decide({ destination: '192.0.2.1', port: 443 }).action, 'deny');
  });

  it('matches SNI and Host patterns, and carries the splice choice', () => {
    assert.deepEqual(p.decide({ destination: '192.0.2.1', port: 443, sni: 'www.Example.com' }), { action: 'allow', reason: 'rule 3', splice: false, dependsOnHost: false });
    assert.equal(p.decide({ destination: '192.0.2.1', port: 443, sni: 'example.com' }).action, 'deny', '*.x does not match x itself');
    assert.equal(p.decide({ destination: '192.0.2.1', port: 80, host: 'api.test' }).action, 'allow');
    assert.ok(p.needsPayload);
    assert.equal(Policy.allowAll().needsPayload, false);
  });

  it('denies a connection without a name when a deny rule needs one (unknown: deny by default)', () => {
    const deny = Policy.parse({ rules: [{ action: 'deny', sni: 'blocked.test' }] });
    for (const facts of [{}, { protocol: 'tls' as const }]) {
      assert.deepEqual(
        deny.decide({ destination: '192.0.2.1', port: 443, ...facts }),
        { action: 'deny', reason: 'unknown sni (rule 1)', splice: true, dependsOnHost: false },
        JSON.stringify(facts),
      );
    }
    assert.equal(deny.decide({ destination: '192.0.2.1', port: 443, protocol: 'tls', sni: 'ok.test' }).action, 'allow');
    assert.equal(deny.decide({ destination: '192.0.2.1', port: 80, protocol: 'http' }).action, 'allow', 'plain HTTP carries no SNI');
    const hostDeny = Policy.parse({ rules: [{ action: 'deny', host: 'internal.test' }] });
    assert.equal(hostDeny.decide({ destination: '192.0.2.1', port: 80 }).reason, 'unknown host (rule 1)');
    assert.equal(hostDeny.decide({ destination: '192.0.2.1', port: 80, protocol: 'http' }).action, 'deny', 'HTTP without a Host');
    assert.equal(hostDeny.decide({ destination: '192.0.2.1', port: 443, protocol: 'tls' }).action, 'allow', 'TLS shows no Host');
  });

  it("lets the policy file choose 'allow' for unknown names, and never lets a missing name earn an allow", () => {
    const lax = Policy.parse({
      unknown: 'allow',
      rules: [
        { action: 'deny', sni: 'blocked.test' },
        { action: 'deny', ports: 25 },
      ],
    });
    assert.deepEqual(lax.decide({ destination: '192.0.2.1', port: 443 }), { action: 'allow', reason: 'default', splice: true, dependsOnHost: false });
    assert.equal(lax.decide({ destination: '192.0.2.1', port: 25 }).reason, 'rule 2', 'the rules after it still decide');
    const allowList = Policy.parse({
      default: 'deny',
      rules: [
        { action: 'deny', destination: '10.0.0.9/32' },
        { action: 'allow', host: 'api.test' },
        { action: 'allow', ports: 5432 },
      ],
    });
    assert.equal(allowList.decide({ destination: '10.0.0.9', port: 80 }).reason, 'rule 1', 'a rule before the name rule still decides');
    assert.equal(allowList.decide({ destination: '10.0.0.1', port: 80 }).reason, 'default');
    assert.equal(allowList.decide({ destination: '10.0.0.1', port: 5432 }).reason, 'rule 3');
  });

  it('says when a Host rule was weighed (each later request must be checked too)', () => {
    const mixed = Policy.parse({
      rules: [
        { action: 'allow', ports: 8080 },
        { action: 'deny', host: 'internal.test' },
        { action: 'allow', destination: '10.0.0.0/8' },
      ],
    });
    assert.equal(mixed.decide({ destination: '10.0.0.1', port: 8080, protocol: 'http', host: 'internal.test' }).dependsOnHost, false, 'decided before the Host rule');
    assert.equal(mixed.decide({ destination: '10.0.0.1', port: 80, protocol: 'http', host: 'a.test' }).dependsOnHost, true);
    assert.equal(mixed.decide({ destination: '10.0.0.1', port: 80, protocol: 'http', host: 'internal.test' }).action, 'deny');
  });

  it('names the first problem of a malformed policy (E_POLICY)', () => {
    for (const [bad, where] of [
      [{ rules: [{ action: 'maybe' }] }, /rules\.0\.action/],
      [{ rules: [{ action: 'deny', ports: '1-2-3' }] }, /rules\.0\.ports/],
      [{ rules: [{ action: 'deny', destination: 'nope' }] }, /rules\.0\.destination/],
      [{ rules: [], extra: 1 }, /extra|Unrecognized/],
      [{ default: 'block' }, /default/],
      [{ unknown: 'maybe' }, /unknown/],
    ] as const) {
      assert.throws(
        () => Policy.parse(bad),
        (e: unknown) => isAccelError(e, 'E_POLICY') && where.test((e as Error).message),
        JSON.stringify(bad),
      );
    }
  });
});
