/**
 * Which build of the interception's BPF programs an interception runs, as
 * the fast path's (fastpath/build.ts): a SHA-256 over the objects whose
 * programs it attaches (tc_tproxy.c on the tc hooks, sk_lookup.c on the
 * network namespace, cgroup_egress.c as the egress guard), recorded in the
 * interception's record. A new version of accel whose interception
 * programs differ replaces them in place (intercept/upgrade.ts).
 */
import { objectsBuildId } from '../bpf/build-id.js';

export const INTERCEPT_OBJECTS = ['tc_tproxy.bpf.o', 'sk_lookup.bpf.o', 'cgroup_egress.bpf.o'] as const;

export interface InterceptBuild {
  buildId: string;
  /** When the programs of this build were installed or swapped in. */
  at: string;
  how: 'installed' | 'upgraded';
  /** The build it was upgraded from (null: installed, or unknown). */
  from: string | null;
}

export function interceptBuildId(bpfDir: string): string {
  return objectsBuildId(bpfDir, INTERCEPT_OBJECTS);
}

export function interceptBuild(buildId: string, how: InterceptBuild['how'], from: string | null = null): InterceptBuild {
  return { buildId, at: new Date().toISOString(), how, from };
}
