// Kernel features on the real kernel: this one (6.18) has everything every
// component lists, accel features says so, the attachment preflight
// refuses a kernel that lacks one before it touches anything, and a
// cgroup's level comes from the kernel.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { type Component, type Feature, featureReport, helperAvailable, listFeatures, probeFeatures, requireKernelFeatures } from '../../src/bpf/features.js';
import { Helper, ProgType } from '../../src/bpf/uapi.js';
import { reconcileTo } from '../../src/attachment/reconcile.js';
import { parseSpec } from '../../src/attachment/spec.js';
import { type Cgroup, cgroup2Root, createChildCgroup, inCgroupNamespace, removeCgroup } from '../../src/cgroup/cgroup.js';
import { kernelCgroupLevel } from '../../src/cgroup/level.js';
import { isAccelError } from '../../src/errors.js';
import { readRecord } from '../../src/intercept/record.js';
import { journalPath } from '../../src/paths.js';
import { BPFFS, BPF_DIR, accel, nothingAttached, testCgroup } from '../helpers/env.js';
import { requireFeature } from '../helpers/features.js';

const COMPONENTS: Component[] = ['fastpath', 'intercept', 'splice', 'listeners'];

describe('kernel features on this kernel', () => {
  it('every feature of every component is there, and the preflight passes each component', () => {
    for (const c of COMPONENTS) {
      const features = probeFeatures(c);
      assert.deepEqual(
        features.map((f) => f.name),
        listFeatures(c).map((f) => f.name),
      );
      assert.deepEqual(
        features.filter((f) => !f.present).map((f) => f.name),
        [],
        `${c}: this kernel (6.18) has all of it`,
      );
      assert.deepEqual(requireKernelFeatures(c), [], `${c}: nothing degraded`);
    }
  });

  // libbpf 1.1's helper probe answered "supported" for the first two: it
  // knows the verifier's older wording only (docs/kernel-notes.md).
  it('asks the verifier which helpers a program type may call: none that only other types may', () => {
    const SK_ANCESTOR_CGROUP_ID = 129;
    assert.equal(helperAvailable(ProgType.SCHED_CLS, SK_ANCESTOR_CGROUP_ID), false, 'bpf_sk_ancestor_cgroup_id in tc');
    assert.equal(helperAvailable(ProgType.SCHED_CLS, Helper.msg_redirect_hash), false, 'bpf_msg_redirect_hash in tc');
    assert.equal(helperAvailable(ProgType.SCHED_CLS, 1_000_000), false, 'a helper id no kernel has');
    // Taken, whether the bare call then loads (no argument) or not.
    assert.equal(helperAvailable(ProgType.SCHED_CLS, Helper.sk_assign), true, 'bpf_sk_assign in tc');
    assert.equal(helperAvailable(ProgType.SK_MSG, Helper.msg_redirect_hash), true, 'bpf_msg_redirect_hash in sk_msg');
    assert.equal(helperAvailable(ProgType.SK_MSG, Helper.get_netns_cookie), true, 'bpf_get_netns_cookie in sk_msg');
  });

  it('requireFeature lets a test run on a kernel that has the feature, and a misspelt name fails the test', (t) => {
    assert.equal(requireFeature(t, 'tcx links', 'TCP_BPF_SOCK_OPS_CB_FLAGS in bpf_setsockopt', 'bpf_rdonly_cast kfunc'), true);
    assert.throws(() => requireFeature(t, 'tcx link'), /no component of accel lists/);
  });

  it('accel features: every component usable, each feature with its release (text and JSON)', async () => {
    const json = await accel(['features', '--json']);
    assert.equal(json.exitCode, 0, json.stderr);
    const report = JSON.parse(json.stdout) as ReturnType<typeof featureReport>;
    for (const c of COMPONENTS) {
      assert.equal(report.components[c].usable, true, c);
      assert.equal(report.components[c].degraded, false, c);
      assert.ok(report.components[c].features.every((f: Feature) => f.present && /^\d+\.\d+$/.test(f.sinceKernel)));
    }
    const text = await accel(['features']);
    assert.equal(text.exitCode, 0, text.stderr);
    assert.match(text.stdout, /^interception: usable$/m);
    assert.match(text.stdout, /^ {2}ok +bpf_get_netns_cookie in tc programs \(Linux 6\.13\+\)$/m);
    assert.doesNotMatch(text.stdout, /MISSING/);
  });
});

describe('the attachment preflight', () => {
  for (const [component, feature] of [
    ['fastpath', 'bpf_rdonly_cast kfunc'],
    ['intercept', 'bpf_get_netns_cookie in tc programs'],
  ] as const) {
    it(`refuses a kernel without ${feature} (${component}) with one line, before anything is touched`, async (t) => {
      const cg = testCgroup(t, 'accel-feat');
      const spec = parseSpec({
        cgroup: cg.path,
        fastPath: { selftest: false },
        intercept: { ifaces: ['lo'], rules: ['127.0.0.1/32:7999'], proxyPort: 15099 },
      });
      // The test seam (src/seams.ts): this feature reported absent.
      process.env.ACCEL_FEATURE_ABSENT = feature;
      try {
        await assert.rejects(
          () => reconcileTo(spec, { bpffs: BPFFS, bpfDir: BPF_DIR }),
          (e: unknown) => isAccelError(e, 'E_KERNEL_FEATURE') && e.message.split('\n').length === 1 && e.message.includes(feature) && /\(Linux \d+\.\d+\+\)$/.test(e.message),
        );
      } finally {
        delete process.env.ACCEL_FEATURE_ABSENT;
      }
      assert.deepEqual(nothingAttached(cg), { programs: [], pinDir: false });
      assert.equal(readRecord(cg.id), null, 'no interception record');
      assert.equal(fs.existsSync(journalPath(cg.id)), false, 'no journal');
    });
  }
});

describe("a cgroup's level, from the kernel", () => {
  it('is its depth below the root of the whole hierarchy (here, in the init cgroup namespace, what the mount shows)', async (t) => {
    assert.equal(inCgroupNamespace(), false, 'the tests run in the init cgroup namespace');
    const made: Cgroup[] = [];
    t.after(async () => {
      for (const cg of made.reverse()) await removeCgroup(cg);
    });
    const top = createChildCgroup(cgroup2Root(), 'accel-level');
    made.push(top);
    const mid = createChildCgroup(top.path, 'mid');
    made.push(mid);
    const leaf = createChildCgroup(mid.path, 'leaf');
    made.push(leaf);
    // The hierarchy's root is this host's cgroup2 mount, which shows it whole.
    assert.equal(kernelCgroupLevel(top, BPF_DIR), 1);
    assert.equal(kernelCgroupLevel(mid, BPF_DIR), 2);
    assert.equal(kernelCgroupLevel(leaf, BPF_DIR), 3);
  });

  it('refuses a path that now names another cgroup', async (t) => {
    const top = testCgroup(t, 'accel-level');
    const stale = { path: top.path, id: top.id + 1000000n };
    assert.throws(
      () => kernelCgroupLevel(stale, BPF_DIR),
      (e: unknown) => isAccelError(e, 'E_CGROUP_NOT_FOUND'),
    );
  });
});
