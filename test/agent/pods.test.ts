// Pods to cgroups, and what the agent decides to attach, on directories
// laid out like the kubelet's under both cgroup drivers (plain directories:
// the mapping reads only names and inodes).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { parseAgentConfig } from '../../src/agent/config.js';
import { compileSelections, desiredTargets } from '../../src/agent/desired.js';
import { podInfo } from '../../src/agent/kube.js';
import { type PodInfo, podCgroup, podCgroupCandidates, selectorMatches } from '../../src/agent/pods.js';

const UID_A = '0f1e2d3c-aaaa-4bbb-8ccc-000000000001';
const UID_B = '0f1e2d3c-aaaa-4bbb-8ccc-000000000002';
const UID_C = '0f1e2d3c-aaaa-4bbb-8ccc-000000000003';

function tree(t: { after: (fn: () => void) => void }, dirs: string[]): string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-pods-'));
  t.after(() => fs.rmSync(root, { recursive: true, force: true }));
  for (const d of dirs) fs.mkdirSync(path.join(root, d), { recursive: true });
  return root;
}

const pod = (uid: string, qosClass: string | null, extra: Partial<PodInfo> = {}): PodInfo => ({
  uid,
  namespace: 'shop',
  name: `p-${uid.slice(-1)}`,
  qosClass,
  annotations: {},
  labels: {},
  ...extra,
});

describe('pod cgroups', () => {
  it('names the cgroup of each QoS class under both drivers', () => {
    assert.deepEqual(podCgroupCandidates(UID_A, 'Burstable'), [
      `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID_A.replace(/-/g, '_')}.slice`,
      `kubepods/burstable/pod${UID_A}`,
    ]);
    assert.deepEqual(podCgroupCandidates(UID_A, 'Guaranteed'), [`kubepods.slice/kubepods-pod${UID_A.replace(/-/g, '_')}.slice`, `kubepods/pod${UID_A}`]);
    assert.equal(podCgroupCandidates(UID_A, null).length, 6, 'unknown QoS: every class is tried');
  });

  it('finds the cgroup the kubelet made, under the systemd and the cgroupfs driver', (t) => {
    const u = (s: string) => s.replace(/-/g, '_');
    const root = tree(t, [
      `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${u(UID_A)}.slice/cri-containerd-1.scope`,
      `kubepods.slice/kubepods-pod${u(UID_B)}.slice`,
      `kubepods/burstable/pod${UID_C}/container1`,
    ]);
    assert.equal(podCgroup(root, { uid: UID_A, qosClass: 'BestEffort' }), `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${u(UID_A)}.slice`);
    assert.equal(podCgroup(root, { uid: UID_A, qosClass: null }), `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${u(UID_A)}.slice`);
    assert.equal(podCgroup(root, { uid: UID_B, qosClass: 'Guaranteed' }), `kubepods.slice/kubepods-pod${u(UID_B)}.slice`);
    assert.equal(podCgroup(root, { uid: UID_C, qosClass: 'Burstable' }), `kubepods/burstable/pod${UID_C}`);
    assert.equal(podCgroup(root, { uid: UID_C, qosClass: 'Guaranteed' }), null, 'the QoS class decides where to look');
  });

  it('matches key and key=value selectors', () => {
    assert.equal(selectorMatches('accel.dev/enabled', { 'accel.dev/enabled': '' }), true);
    assert.equal(selectorMatches('accel.dev/enabled=true', { 'accel.dev/enabled': 'false' }), false);
    assert.equal(selectorMatches('app=web', { app: 'web' }), true);
    assert.equal(selectorMatches('app', {}), false);
  });

  // Version 2 of the client needs a newer Node.js (its undici uses zstd):
  // it failed to load here. No API server runs here, so no watch is started.
  it('the official Kubernetes client loads on this Node.js and makes a pod list-watch', async () => {
    const k8s = await import('@kubernetes/client-node');
    const kc = new k8s.KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: 'https://127.0.0.1:1' }],
      users: [{ name: 'u' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    const api = kc.makeApiClient(k8s.CoreV1Api);
    const lw = new k8s.ListWatch('/api/v1/pods', new k8s.Watch(kc), () => api.listPodForAllNamespaces({ fieldSelector: 'spec.nodeName=n1' }), false, undefined, 'spec.nodeName=n1');
    assert.deepEqual(lw.list(), []);
  });

  it('reads pods from the API objects, leaving out finished ones', () => {
    assert.deepEqual(podInfo({ metadata: { uid: UID_A, name: 'a', namespace: 'n', labels: { app: 'x' } }, status: { qosClass: 'Burstable', phase: 'Running' } }), {
      uid: UID_A,
      namespace: 'n',
      name: 'a',
      qosClass: 'Burstable',
      annotations: {},
      labels: { app: 'x' },
    });
    assert.equal(podInfo({ metadata: { uid: UID_A }, status: { phase: 'Succeeded' } }), null);
    assert.equal(podInfo({ metadata: {} }), null);
  });
});

describe('what the agent decides to attach', () => {
  const config = parseAgentConfig(
    `
kubernetes: { enabled: true, nodeName: n1 }
selections:
  - name: annotated
    pods: { annotation: accel.dev/enabled=true }
    fastPath: { bypassPorts: [9000] }
  - name: units
    cgroups: ["system.slice/{web,api}.service", "kubepods/*/pod*"]
`,
    'c.yaml',
  );

  it('selects annotated pods and matching units, each once, first selection first', (t) => {
    const u = (s: string) => s.replace(/-/g, '_');
    const root = tree(t, [
      `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${u(UID_A)}.slice`,
      `kubepods/besteffort/pod${UID_B}`,
      `kubepods/besteffort/pod${UID_C}`,
      'system.slice/web.service',
      'system.slice/api.service',
      'system.slice/db.service',
    ]);
    const pods = [
      pod(UID_A, 'Burstable', { annotations: { 'accel.dev/enabled': 'true' } }),
      pod(UID_B, 'BestEffort', { annotations: { 'accel.dev/enabled': 'true' } }),
      pod(UID_C, 'BestEffort', { annotations: { 'accel.dev/enabled': 'false' } }),
    ];
    const d = desiredTargets(root, compileSelections(config), pods, 1000);
    const got = [...d.targets.values()].map((x) => [x.rel, x.selection, x.pod?.name ?? null, x.spec.fastPath.bypassPorts.join(',')]).sort();
    assert.deepEqual(
      got,
      [
        [`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${u(UID_A)}.slice`, 'annotated', 'p-1', '9000'],
        [`kubepods/besteffort/pod${UID_B}`, 'annotated', 'p-2', '9000'],
        // Not annotated, but the glob of the second selection takes it.
        [`kubepods/besteffort/pod${UID_C}`, 'units', null, ''],
        ['system.slice/api.service', 'units', null, ''],
        ['system.slice/web.service', 'units', null, ''],
      ].sort(),
    );
    // A pod whose cgroup the kubelet has not made yet is not a target.
    const later = desiredTargets(
      root,
      compileSelections(config),
      [pod('0f1e2d3c-aaaa-4bbb-8ccc-000000000009', 'Burstable', { annotations: { 'accel.dev/enabled': 'true' } })],
      1000,
    );
    assert.equal([...later.targets.values()].filter((x) => x.selection === 'annotated').length, 0);
  });

  it('stops a scan at maxScan directories and says so', (t) => {
    const root = tree(t, ['system.slice/web.service', 'a', 'b', 'c']);
    const cfg = parseAgentConfig('selections: [{ name: all, cgroups: ["**/web.service"] }]', 'x');
    const d = desiredTargets(root, compileSelections(cfg), [], 2);
    assert.equal(d.truncated, true);
    assert.equal(desiredTargets(root, compileSelections(cfg), [], 100).targets.size, 1);
  });
});
