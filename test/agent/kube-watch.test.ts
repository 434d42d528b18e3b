// The agent's pod source against an API server on loopback that speaks the
// list and watch protocol of /api/v1/pods (test/helpers/fake-api.ts),
// through the official client as the agent uses it. What is
// checked is what the agent relies on: the node's field selector on both
// requests, events applied to the pod list, and a watch or list that fails
// (an API server restart, a dropped connection, a 500) followed by a new one.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type PodSource, Retry, watchNodePods } from '../../src/agent/kube.js';
import { FakeApiServer, NODE, startFakeApi } from '../helpers/fake-api.js';

async function until(what: string, cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function withApi(t: { after: (fn: () => Promise<void> | void) => void }, api: FakeApiServer): Promise<void> {
  const kubeconfig = await startFakeApi(t, api);
  const before = process.env.KUBECONFIG;
  process.env.KUBECONFIG = kubeconfig;
  t.after(() => {
    if (before === undefined) delete process.env.KUBECONFIG;
    else process.env.KUBECONFIG = before;
  });
}

const uids = (source: PodSource): string[] =>
  source
    .pods()
    .map((p) => p.uid)
    .sort();

describe('the pod watch against an API server', () => {
  it('lists and watches only this node, applies each event, and watches again after the stream is cut', async (t) => {
    const api = new FakeApiServer();
    await withApi(t, api);
    api.put('uid-a', 'a');
    api.put('uid-done', 'done', { phase: 'Succeeded' });
    const source = await watchNodePods(NODE);
    t.after(() => source.stop());
    await until('the first list', () => source.synced());
    assert.deepEqual(uids(source), ['uid-a'], 'a finished pod is no pod to attach');

    api.put('uid-b', 'b');
    await until('pod b from the watch', () => uids(source).includes('uid-b'));
    api.remove('uid-a');
    await until('pod a deleted', () => !uids(source).includes('uid-a'));
    api.put('uid-b', 'b', { phase: 'Failed' });
    await until('pod b finished', () => uids(source).length === 0);

    // The connection is reset (an API server restart, a load balancer):
    // the source must watch again, from where it was, and see what follows.
    const watches = api.watches;
    api.dropWatches();
    api.put('uid-c', 'c');
    await until('pod c after the watch was cut', () => uids(source).includes('uid-c'));
    assert.ok(api.watches > watches, 'a new watch was opened');
    assert.equal(api.lists, 1, 'a watch resumed from its resourceVersion needs no new list');
    assert.ok(
      api.selectors.every((s) => s === `spec.nodeName=${NODE}`),
      `every request asked for this node's pods only: ${api.selectors.join(', ')}`,
    );
  });

  it('retries a list and a watch that the API server answers with an error', async (t) => {
    const api = new FakeApiServer();
    await withApi(t, api);
    api.put('uid-a', 'a');
    api.failures = 2;
    const source = await watchNodePods(NODE);
    t.after(() => source.stop());
    await until('the first list, after two failed requests', () => source.synced());
    assert.deepEqual(uids(source), ['uid-a']);

    api.failures = 1;
    api.dropWatches();
    api.put('uid-b', 'b');
    await until('pod b after a failed watch', () => uids(source).includes('uid-b'));
  });

  it('stops: no request follows stop()', async (t) => {
    const api = new FakeApiServer();
    await withApi(t, api);
    const source = await watchNodePods(NODE);
    await until('the first list', () => source.synced());
    api.failures = 1;
    await source.stop();
    api.dropWatches();
    const requests = api.selectors.length;
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(api.selectors.length, requests, 'a stopped source made another request');
  });
});

describe("the pod watch's retry", () => {
  it('waits 1 s, then twice as long after each failure in a row, at most 30 s, and from 1 s again after a success', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    let restarts = 0;
    const delays: number[] = [];
    const retry = new Retry(() => {
      restarts += 1;
    });
    retry.onFailure = (_err, ms) => delays.push(ms);
    for (let i = 0; i < 7; i++) {
      retry.failed(new Error('x'));
      retry.failed(new Error('the same outage, reported twice')); // one restart is pending: no second one
      t.mock.timers.tick(Retry.MAX_MS);
    }
    assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    assert.equal(restarts, 7);
    retry.succeeded();
    retry.failed(new Error('x'));
    assert.equal(delays.at(-1), 1000);
    retry.stop();
    t.mock.timers.tick(Retry.MAX_MS);
    assert.equal(restarts, 7, 'no restart after stop()');
  });
});
