// The proxy's /metrics: allowed connections by the path their bytes took.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { serverRegistry } from '../../src/cli/server-metrics.js';

describe('proxy metrics', () => {
  it('count allowed connections by path: shortcut, splice, relay, inspect', async () => {
    const stats = { allowed: 10, shortcut: 4, spliced: 3, relayed: 2, inspected: 1 };
    const text = await serverRegistry(
      'proxy',
      () => stats,
      () => null,
    ).metrics();
    const by = (p: string) => new RegExp(`^accel_proxy_connections_by_path_total\\{path="${p}"\\} (\\d+)$`, 'm').exec(text)?.[1];
    assert.deepEqual(['shortcut', 'splice', 'relay', 'inspect'].map(by), ['4', '3', '2', '1']);
  });
});
