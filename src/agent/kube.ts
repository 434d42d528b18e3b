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
      return list;
    },
    false,
    undefined,
    fieldSelector,
  );
  informer.on('error', (err: unknown) => log.warn(`pod watch of node ${node}: ${(err as Error)?.message ?? String(err)} (the client reconnects)`));
  await informer.start();
  log.info(`watching the pods of node ${node}`);
  return {
    pods: () => informer.list().flatMap((p) => podInfo(p) ?? []),
    synced: () => synced,
    stop: () => informer.stop(),
  };
}
