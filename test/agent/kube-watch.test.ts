// The agent's pod source against an API server on loopback that speaks the
// list and watch protocol of /api/v1/pods (a PodList with a
// resourceVersion, then a chunked stream of JSON watch events), through the
// official client as the agent uses it. No cluster runs here; what is
// checked is what the agent relies on: the node's field selector on both
// requests, events applied to the pod list, and a watch or list that fails
// (an API server restart, a dropped connection, a 500) followed by a new one.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { type PodSource, Retry, watchNodePods } from '../../src/agent/kube.js';

const NODE = 'node-7';

interface Pod {
  metadata: { uid: string; name: string; namespace: string; resourceVersion?: string; labels?: Record<string, string> };
  spec: { nodeName: string };
  status: { phase: string; qosClass: string };
}

/** Just enough of an API server for a list and watch of one node's pods. */
class FakeApiServer {
  private rv = 100;
  private readonly pods = new Map<string, Pod>();
  private readonly events: { rv: number; type: string; object: Pod }[] = [];
  private readonly watchers = new Set<http.ServerResponse>();
  readonly selectors: string[] = [];
  lists = 0;
  watches = 0;
  /** Requests still to answer with a 500 (lists and watches alike). */
  failures = 0;
  readonly server = http.createServer((req, res) => this.handle(req, res));

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.dropWatches();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  put(uid: string, name: string, phase = 'Running'): void {
    const type = this.pods.has(uid) ? 'MODIFIED' : 'ADDED';
    const pod: Pod = { metadata: { uid, name, namespace: 'shop' }, spec: { nodeName: NODE }, status: { phase, qosClass: 'Burstable' } };
    this.pods.set(uid, pod);
    this.emit(type, pod);
  }

  remove(uid: string): void {
    const pod = this.pods.get(uid);
    if (!pod) return;
    this.pods.delete(uid);
    this.emit('DELETED', pod);
  }

  /** Cut every open watch without ending it (the connection is reset). */
  dropWatches(): void {
    for (const res of this.watchers) res.socket?.destroy();
    this.watchers.clear();
  }

  private emit(type: string, pod: Pod): void {
    this.rv += 1;
    pod.metadata.resourceVersion = String(this.rv);
    const event = { rv: this.rv, type, object: structuredClone(pod) };
    this.events.push(event);
    for (const res of this.watchers) res.write(`${JSON.stringify({ type: event.type, object: event.object })}\n`);
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname !== '/api/v1/pods') {
      res.writeHead(404).end();
      return;
    }
    const selector = url.searchParams.get('fieldSelector') ?? '';
    this.selectors.push(selector);
    if (selector !== `spec.nodeName=${NODE}`) {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', code: 400, message: 'this test serves only one node' }));
      return;
    }
    if (this.failures > 0) {
      this.failures -= 1;
      res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', code: 500, message: 'etcd is restarting' }));
      return;
    }
    if (url.searchParams.get('watch') !== 'true') {
      this.lists += 1;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) }, items: [...this.pods.values()] }));
      return;
    }
    this.watches += 1;
    const since = Number(url.searchParams.get('resourceVersion') ?? '0');
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    for (const e of this.events) if (e.rv > since) res.write(`${JSON.stringify({ type: e.type, object: e.object })}\n`);
    this.watchers.add(res);
    res.on('close', () => this.watchers.delete(res));
  }
}

async function until(what: string, cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function withApi(t: { after: (fn: () => Promise<void> | void) => void }, api: FakeApiServer): Promise<void> {
  const url = await api.listen();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-kube-'));
  const kubeconfig = path.join(dir, 'config');
  fs.writeFileSync(
    kubeconfig,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      // Plain HTTP on loopback: the client allows it only with TLS checks off.
      clusters: [{ name: 'c', cluster: { server: url, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'u', user: {} }],
      contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'x',
    }),
  );
  const before = process.env.KUBECONFIG;
  process.env.KUBECONFIG = kubeconfig;
  t.after(async () => {
    if (before === undefined) delete process.env.KUBECONFIG;
    else process.env.KUBECONFIG = before;
    await api.close();
    fs.rmSync(dir, { recursive: true, force: true });
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
    api.put('uid-done', 'done', 'Succeeded');
    const source = await watchNodePods(NODE);
    t.after(() => source.stop());
    await until('the first list', () => source.synced());
    assert.deepEqual(uids(source), ['uid-a'], 'a finished pod is no pod to attach');

    api.put('uid-b', 'b');
    await until('pod b from the watch', () => uids(source).includes('uid-b'));
    api.remove('uid-a');
    await until('pod a deleted', () => !uids(source).includes('uid-a'));
    api.put('uid-b', 'b', 'Failed');
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
