// accel agent selecting pods through the Kubernetes API: the agent runs as
// its own process with a kubeconfig for an API server on loopback that
// speaks list and watch (test/helpers/fake-api.ts), and the pods' cgroups
// are laid out as the kubelet makes them, in a test-owned cgroup tree. What
// runs is what a node runs: the official client, the pod-to-cgroup mapping,
// the reconcile, the metrics' pod labels.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { runProbe } from '../../src/probe/sockprobe.js';
import { linkId, sd, startAgent, testTree, tmpDir, uid } from '../helpers/agent.js';
import { MB, fastPathBytes, maps, nothingAttached } from '../helpers/env.js';
import { FakeApiServer, NODE, startFakeApi } from '../helpers/fake-api.js';

const ENABLED = { 'accel.dev/enabled': 'true' };

describe('accel agent with the Kubernetes API', () => {
  it("attaches this node's selected pods, follows the watch (new, re-annotated and deleted pods), and keeps watching after the API server fails", async (t) => {
    const api = new FakeApiServer();
    const kubeconfig = await startFakeApi(t, api);
    const tree = testTree(t);
    const web = tree.mk(`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${sd(uid(11))}.slice`);
    const batch = tree.mk(`kubepods/besteffort/pod${uid(12)}`);
    api.put(uid(11), 'web', { annotations: ENABLED });
    api.put(uid(12), 'batch', { qosClass: 'BestEffort' });
    // The first list fails (the API server is restarting): the agent is
    // not ready, and detaches nothing, until a list has answered.
    api.failures = 1;
    const config = path.join(tmpDir(t), 'agent.yaml');
    fs.writeFileSync(
      config,
      [
        `cgroupRoot: ${tree.root}`,
        'pollIntervalMs: 200',
        `kubernetes: { enabled: true, nodeName: ${NODE} }`,
        'selections:',
        '  - name: annotated',
        '    pods: { annotation: accel.dev/enabled=true }',
        '    fastPath: { selftest: false }',
        '',
      ].join('\n'),
    );
    const agent = await startAgent(t, config, [], [], { KUBECONFIG: kubeconfig });
    await agent.event((e) => e.event === 'ready');
    assert.ok(api.lists >= 1 && api.selectors.every((s) => s === `spec.nodeName=${NODE}`), "only this node's pods were asked for");
    const attached = await agent.event((e) => e.event === 'attached' && e.cgroup === web.rel);
    assert.equal(attached.pod, 'shop/web');
    assert.ok(linkId(web) !== null);
    assert.deepEqual(nothingAttached(batch), { programs: [], pinDir: false }, 'a pod without the annotation is left alone');

    // The pod's traffic takes the fast path, and its series carry the pod.
    const r = await runProbe(['pair', '--bytes', String(2 * MB), '--back', '10'], { cgroupProcs: web.procs });
    assert.ok(r.ok, r.error ?? '');
    assert.ok(fastPathBytes(maps(web, (m) => m.counters())) >= BigInt(2 * MB));
    const exposition = await (await fetch(`http://${agent.metrics}/metrics`)).text();
    assert.match(exposition, /accel_fastpath_redirected_bytes_total\{[^}]*namespace="shop"[^}]*pod="web"[^}]*\} [1-9]/);

    // Annotated later (MODIFIED): attached.
    api.put(uid(12), 'batch', { qosClass: 'BestEffort', annotations: ENABLED });
    await agent.event((e) => e.event === 'attached' && e.cgroup === batch.rel);

    // The API server restarts: the watch is cut and the next request
    // fails. A pod created after that is still found.
    api.failures = 1;
    api.dropWatches();
    const late = tree.mk(`kubepods.slice/kubepods-pod${sd(uid(13))}.slice`);
    api.put(uid(13), 'api', { qosClass: 'Guaranteed', annotations: ENABLED });
    await agent.event((e) => e.event === 'attached' && e.cgroup === late.rel, 30_000);

    // The annotation removed, and a pod deleted while the kubelet has not
    // yet removed its cgroup: both detached, as deselected.
    api.put(uid(11), 'web');
    const webGone = await agent.event((e) => e.event === 'detached' && e.cgroup === web.rel);
    assert.equal(webGone.reason, 'deselected');
    api.remove(uid(12));
    const batchGone = await agent.event((e) => e.event === 'detached' && e.cgroup === batch.rel);
    assert.equal(batchGone.reason, 'deselected');
    assert.deepEqual(nothingAttached(web), { programs: [], pinDir: false });
    assert.ok(linkId(late) !== null, 'the other pod keeps its attachment');
  });
});
