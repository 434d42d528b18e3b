// An API server on loopback that speaks just enough of Kubernetes' list and
// watch protocol for /api/v1/pods (a PodList with a resourceVersion, then a
// chunked stream of JSON watch events) for the agent's pod watch, through
// the official client, to run against it; and a kubeconfig that points at
// it. No cluster runs here.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** The only node this server serves; a request for another is a 400. */
export const NODE = 'node-7';

export interface Pod {
  metadata: { uid: string; name: string; namespace: string; resourceVersion?: string; annotations?: Record<string, string>; labels?: Record<string, string> };
  spec: { nodeName: string };
  status: { phase: string; qosClass: string };
}

export interface PodFields {
  phase?: string;
  qosClass?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
}

export class FakeApiServer {
  private rv = 100;
  private readonly pods = new Map<string, Pod>();
  private readonly events: { rv: number; type: string; object: Pod }[] = [];
  private readonly watchers = new Set<http.ServerResponse>();
  /** The field selector of every request, in order. */
  readonly selectors: string[] = [];
  lists = 0;
  watches = 0;
  /** Requests still to answer with a 500 (lists and watches alike). */
  failures = 0;
  private readonly server = http.createServer((req, res) => this.handle(req, res));

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.dropWatches();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Add a pod, or change it (ADDED or MODIFIED to the watches). */
  put(uid: string, name: string, fields: PodFields = {}): void {
    const type = this.pods.has(uid) ? 'MODIFIED' : 'ADDED';
    const pod: Pod = {
      metadata: { uid, name, namespace: 'shop', annotations: fields.annotations ?? {}, labels: fields.labels ?? {} },
      spec: { nodeName: NODE },
      status: { phase: fields.phase ?? 'Running', qosClass: fields.qosClass ?? 'Burstable' },
    };
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
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', code: 400, message: 'this server serves one node' }));
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

/** Start `api` and write a kubeconfig for it; both go when the test ends.
 * Returns the kubeconfig's path (for KUBECONFIG). */
export async function startFakeApi(t: { after: (fn: () => Promise<void> | void) => void }, api: FakeApiServer): Promise<string> {
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
  t.after(async () => {
    await api.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return kubeconfig;
}
