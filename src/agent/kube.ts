/**
 * The pods of this node from the Kubernetes API: a list and watch of pods
 * with fieldSelector spec.nodeName=<node>, through the official client.
 * Loaded only when kubernetes.enabled (the client is large). In a pod it
 * uses the service account; elsewhere the usual kubeconfig.
 */
import type { V1Pod } from '@kubernetes/client-node';
import { AccelError, ErrorCodes } from '../errors.js';
import { log } from '../log.js';
import type { PodInfo } from './pods.js';

export interface PodSource {
  pods(): PodInfo[];
  /** The first list has arrived: before it, no pod is known (none is detached for it). */
  synced(): boolean;
  stop(): Promise<void>;
}

interface PodLike {
  metadata?: { uid?: string; name?: string; namespace?: string; annotations?: Record<string, string>; labels?: Record<string, string> };
  status?: { qosClass?: string; phase?: string };
}

/** A pod as the agent needs it; null for one without a UID. Finished pods
 * (Succeeded, Failed) have no running cgroup to attach to. */
export function podInfo(p: PodLike): PodInfo | null {
  const m = p.metadata;
  if (!m?.uid || p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed') return null;
  return { uid: m.uid, namespace: m.namespace ?? '', name: m.name ?? '', qosClass: p.status?.qosClass ?? null, annotations: m.annotations ?? {}, labels: m.labels ?? {} };
}

export async function watchNodePods(nodeName: string | undefined): Promise<PodSource> {
  const node = nodeName ?? process.env.NODE_NAME;
  if (!node) throw new AccelError(ErrorCodes.USAGE, 'kubernetes.enabled needs the node name: set kubernetes.nodeName or NODE_NAME (the downward API: spec.nodeName)');
  const k8s = await import('@kubernetes/client-node');
  const kc = new k8s.KubeConfig();
  kc.loadFromDefault();
  const api = kc.makeApiClient(k8s.CoreV1Api);
  const fieldSelector = `spec.nodeName=${node}`;
  let synced = false;
  const informer = new k8s.ListWatch<V1Pod>(
    '/api/v1/pods',
    new k8s.Watch(kc),
    async () => {
      const list = await api.listPodForAllNamespaces({ fieldSelector });
      synced = true;
      retry.succeeded();
      return list;
    },
    false,
    undefined,
    fieldSelector,
  );
  // The client's ListWatch gives up after an error (a reset connection, a
  // 5xx, an expired token): it reports it and makes no further request. A
  // node agent must keep watching, so each error schedules a new start,
  // which resumes the watch from the last resourceVersion (or lists again).
  const retry = new Retry(() => {
    informer.start().catch((err: unknown) => retry.failed(err));
  });
  informer.on('error', (err: unknown) => retry.failed(err));
  informer.on('change', () => retry.succeeded());
  retry.onFailure = (err, delayMs) => log.warn(`pod watch of node ${node}: ${describeError(err)}; watching again in ${delayMs} ms`);
  await informer.start();
  log.info(`watching the pods of node ${node}`);
  return {
    pods: () => informer.list().flatMap((p) => podInfo(p) ?? []),
    synced: () => synced,
    stop: async () => {
      retry.stop();
      await informer.stop();
    },
  };
}

/** Restarts after failures, waiting 1 s, then twice as long each time in a
 * row, at most 30 s; a success resets the wait. Exported for its test. */
export class Retry {
  static readonly FIRST_MS = 1000;
  static readonly MAX_MS = 30_000;
  private inRow = 0;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  onFailure: (err: unknown, delayMs: number) => void = () => {};

  constructor(private readonly restart: () => void) {}

  failed(err: unknown): void {
    if (this.stopped || this.timer) return;
    const delayMs = Math.min(Retry.MAX_MS, Retry.FIRST_MS * 2 ** this.inRow);
    this.inRow += 1;
    this.onFailure(err, delayMs);
    this.timer = setTimeout(() => {
      this.timer = null;
      if (!this.stopped) this.restart();
    }, delayMs);
    this.timer.unref();
  }

  succeeded(): void {
    this.inRow = 0;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}

/** One line for an error of the client: an API status keeps its code and message. */
function describeError(err: unknown): string {
  const e = err as { code?: unknown; statusCode?: unknown; body?: unknown; message?: unknown } | null;
  const status = e?.code ?? e?.statusCode;
  if (typeof status === 'number') {
    let message = '';
    try {
      const body = typeof e?.body === 'string' ? (JSON.parse(e.body) as { message?: unknown }) : (e?.body as { message?: unknown } | undefined);
      if (typeof body?.message === 'string') message = `: ${body.message}`;
    } catch {
      // a body that is not JSON: the status alone
    }
    return `HTTP ${status}${message}`;
  }
  return typeof e?.message === 'string' ? e.message.split('\n')[0]! : String(err);
}
