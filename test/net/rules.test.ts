import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isAccelError } from '../../src/errors.js';
import { parseInterceptRule } from '../../src/net/rules.js';

describe('intercept rule syntax', () => {
  it('accepts IPv4 and IPv6 prefixes with a port, a range or any port', () => {
    assert.deepEqual(parseInterceptRule('10.200.0.0/24:8080'), {
      address: '10.200.0.0',
      prefixLength: 24,
      family: 'ipv4',
      portMin: 8080,
      portMax: 8080,
      text: '10.200.0.0/24:8080',
    });
    assert.equal(parseInterceptRule('10.0.0.1:8000-8100').text, '10.0.0.1/32:8000-8100');
    assert.equal(parseInterceptRule('[fd00:200::/64]:443').text, '[fd00:200::/64]:443');
    assert.equal(parseInterceptRule('fd00:200::/64:443').text, '[fd00:200::/64]:443');
    assert.equal(parseInterceptRule('0.0.0.0/0:*').portMax, 65535);
  });

  it('refuses malformed rules with E_USAGE', () => {
    for (const bad of ['10.0.0.0/24', '10.0.0.0/33:80', '10.0.0.256/8:80', '10.0.0.0/8:0', '10.0.0.0/8:90-80', 'fd00::1:80', 'example.com/8:80', '10.0.0.0/8:http']) {
      assert.throws(
        () => parseInterceptRule(bad),
        (e: unknown) => isAccelError(e, 'E_USAGE'),
        bad,
      );
    }
  });
});
