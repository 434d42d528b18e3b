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
    assert.deepEqual(p.decide({ destination: '10.0.0.9', port: 80 }), { action: 'deny', reason: 'rule 1 (blocked host)', splice: true });
    assert.equal(p.decide({ destination: '10.1.2.3', port: 8050 }).action, 'allow');
    assert.equal(p.decide({ destination: 'fd00::5', port: 80 }).action, 'allow');
    assert.equal(p.decide({ destination: '10.1.2.3', port: 443 }).reason, 'default');
    assert.equal(p.decide({ destination: '192.0.2.1', port: 443 }).action, 'deny');
  });

  it('matches SNI and Host patterns, and carries the splice choice', () => {
    assert.deepEqual(p.decide({ destination: '192.0.2.1', port: 443, sni: 'www.Example.com' }), { action: 'allow', reason: 'rule 3', splice: false });
    assert.equal(p.decide({ destination: '192.0.2.1', port: 443, sni: 'example.com' }).action, 'deny', '*.x does not match x itself');
    assert.equal(p.decide({ destination: '192.0.2.1', port: 80, host: 'api.test' }).action, 'allow');
    assert.ok(p.needsPayload);
    assert.equal(Policy.allowAll().needsPayload, false);
  });

  it('names the first problem of a malformed policy (E_POLICY)', () => {
    for (const [bad, where] of [
      [{ rules: [{ action: 'maybe' }] }, /rules\.0\.action/],
      [{ rules: [{ action: 'deny', ports: '1-2-3' }] }, /rules\.0\.ports/],
      [{ rules: [{ action: 'deny', destination: 'nope' }] }, /rules\.0\.destination/],
      [{ rules: [], extra: 1 }, /extra|Unrecognized/],
      [{ default: 'block' }, /default/],
    ] as const) {
      assert.throws(() => Policy.parse(bad), (e: unknown) => isAccelError(e, 'E_POLICY') && where.test((e as Error).message), JSON.stringify(bad));
    }
  });
});
