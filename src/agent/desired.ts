/**
 * What the agent wants attached: from the configuration, the cgroups a scan
 * found and the pods of this node, one target per cgroup, each with its
 * spec. The first selection that matches a cgroup wins.
 */
import fs from 'node:fs';
import path from 'node:path';
import { type AttachmentSpec, parseSpec } from '../attachment/spec.js';
import type { AgentConfig, SelectionConfig } from './config.js';
import { type CgroupGlob, compileGlob } from './glob.js';
import { type PodInfo, podCgroup, podSelected } from './pods.js';
import { scanCgroups } from './scan.js';

export interface Target {
  id: bigint;
  path: string;
  /** Relative to the cgroup root: the `cgroup` label of the metrics. */
  rel: string;
  selection: string;
  spec: AttachmentSpec;
  /** Compares equal when two specs mean the same. */
  specKey: string;
  pod: { namespace: string; name: string } | null;
}

export interface Desired {
  targets: Map<bigint, Target>;
  visited: number;
  truncated: boolean;
}

function specOf(selection: SelectionConfig, cgroupPath: string): { spec: AttachmentSpec; specKey: string } {
  const spec = parseSpec({ cgroup: cgroupPath, fastPath: selection.fastPath, intercept: selection.intercept });
  return { spec, specKey: JSON.stringify({ fastPath: spec.fastPath, intercept: spec.intercept }) };
}

export interface CompiledSelection {
  selection: SelectionConfig;
  globs: CgroupGlob[];
  /** The selection's spec for one cgroup. Every cgroup of a selection
   * shares one parsed fast path and interception and one key: the agent
   * reads its thousand cgroups every poll, and keeps each one's target. */
  specFor(cgroupPath: string): { spec: AttachmentSpec; specKey: string };
}

/** The globs and specs of a configuration, compiled once per configuration. */
export function compileSelections(config: AgentConfig): CompiledSelection[] {
  return config.selections.map((selection) => {
    let shared: { spec: AttachmentSpec; specKey: string } | null = null;
    return {
      selection,
      globs: (selection.cgroups ?? []).map(compileGlob),
      specFor(cgroupPath: string) {
        // Parsed with its first cgroup; a bad one throws at every call, as before.
        const s = (shared ??= specOf(selection, cgroupPath));
        return { spec: { ...s.spec, cgroup: cgroupPath }, specKey: s.specKey };
      },
    };
  });
}

export function desiredTargets(root: string, compiled: CompiledSelection[], pods: PodInfo[], maxScan: number): Desired {
  const targets = new Map<bigint, Target>();
  const allGlobs = compiled.flatMap((c) => c.globs);
  const scan = scanCgroups(root, allGlobs, maxScan);
  for (const { selection, globs, specFor } of compiled) {
    if (selection.pods) {
      for (const pod of pods) {
        if (!podSelected(pod, selection.pods)) continue;
        const rel = podCgroup(root, pod);
        if (!rel) continue;
        const abs = path.join(root, rel);
        let id: bigint;
        try {
          id = fs.statSync(abs, { bigint: true }).ino;
        } catch {
          continue;
        }
        if (!targets.has(id)) targets.set(id, { id, path: abs, rel, selection: selection.name, ...specFor(abs), pod: { namespace: pod.namespace, name: pod.name } });
      }
      continue;
    }
    for (const g of globs) {
      for (const found of scan.matches.get(g) ?? []) {
        if (!targets.has(found.id)) targets.set(found.id, { ...found, selection: selection.name, ...specFor(found.path), pod: null });
      }
    }
  }
  return { targets, visited: scan.visited, truncated: scan.truncated };
}
