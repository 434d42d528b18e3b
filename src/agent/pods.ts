/**
 * Pods of this node and their cgroups. The kubelet names a pod's cgroup
 * after its QoS class and UID:
 *   systemd driver:  kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid with _ for ->.slice
 *                    kubepods.slice/kubepods-pod<uid_>.slice (Guaranteed)
 *   cgroupfs driver: kubepods/<qos>/pod<uid>, kubepods/pod<uid> (Guaranteed)
 * Pure but for the existence checks, so tests run it on real directories.
 */
import fs from 'node:fs';
import path from 'node:path';

export interface PodInfo {
  uid: string;
  namespace: string;
  name: string;
  /** status.qosClass: Guaranteed, Burstable or BestEffort (unknown: each is tried). */
  qosClass: string | null;
  annotations: Record<string, string>;
  labels: Record<string, string>;
}

const QOS = ['Burstable', 'BestEffort', 'Guaranteed'];

/** Relative cgroup paths a pod's cgroup may have, most likely first. */
export function podCgroupCandidates(uid: string, qosClass: string | null): string[] {
  const out: string[] = [];
  const u = uid.replace(/-/g, '_');
  for (const qos of qosClass && QOS.includes(qosClass) ? [qosClass] : QOS) {
    const q = qos.toLowerCase();
    if (qos === 'Guaranteed') out.push(`kubepods.slice/kubepods-pod${u}.slice`, `kubepods/pod${uid}`);
    else out.push(`kubepods.slice/kubepods-${q}.slice/kubepods-${q}-pod${u}.slice`, `kubepods/${q}/pod${uid}`);
  }
  return out;
}

/** The pod's cgroup under `root`, or null while the kubelet has not made it
 * (or after it removed it). */
export function podCgroup(root: string, pod: Pick<PodInfo, 'uid' | 'qosClass'>): string | null {
  for (const rel of podCgroupCandidates(pod.uid, pod.qosClass)) {
    if (fs.existsSync(path.join(root, rel))) return rel;
  }
  return null;
}

/** Does a `key` or `key=value` selector match these labels or annotations? */
export function selectorMatches(selector: string, values: Record<string, string>): boolean {
  const eq = selector.indexOf('=');
  if (eq < 0) return Object.hasOwn(values, selector);
  return values[selector.slice(0, eq)] === selector.slice(eq + 1);
}

/** Selected when every selector given matches. */
export function podSelected(pod: PodInfo, sel: { annotation?: string | undefined; label?: string | undefined }): boolean {
  return (sel.annotation === undefined || selectorMatches(sel.annotation, pod.annotations)) && (sel.label === undefined || selectorMatches(sel.label, pod.labels));
}
