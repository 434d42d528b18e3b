/**
 * The one way to change an attachment: reconcile a cgroup to a spec
 * (`accel attach`, and attach again with new settings) or to nothing
 * (`accel detach`). Resolve and check, take the journal, observe, plan,
 * apply.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ensureBpffs, ownedDir } from '../bpf/bpffs.js';
import { type Prober, probeFeatures, requireKernelFeatures } from '../bpf/features.js';
import { type Cgroup, cgroup2Root, hostWideScope, isHostWide, resolveCgroup } from '../cgroup/cgroup.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { fastPathBuildId } from '../fastpath/build.js';
import { ACCEPT_UNSAFE_HOST_WIDE, requireBpfObjects } from '../fastpath/install.js';
import { checkUpgrade } from '../fastpath/upgrade.js';
import { removeOrphanSelftestCgroups } from '../fastpath/selftest.js';
import { checkPeerProxyOutside } from '../intercept/egress-guard.js';
import { checkIntercept } from '../intercept/check.js';
import { INTERCEPT_OBJECTS, interceptBuildId } from '../intercept/build.js';
import { checkInterceptUpgrade } from '../intercept/upgrade.js';
import { readRecord } from '../intercept/record.js';
import { log } from '../log.js';
import { removeUnusedOwners } from '../maps/owners.js';
import { removeUnusedProxyListeners } from '../maps/proxy-listeners.js';
import { attachmentPinDir, pinRoot } from '../paths.js';
import { requirePrivileges } from '../privileges.js';
import { seam } from '../seams.js';
import { type ApplyResult, apply } from './apply.js';
import { type Journal, JournalHandle } from './journal.js';
import { currentNetns } from '../net/iproute.js';
import { observe } from './observe.js';
import { type Plan, plan } from './plan.js';
import { checkProxyMark } from './proxy-mark.js';
import type { AttachmentSpec } from './spec.js';

export interface ReconcileOptions {
  bpffs: string;
  bpfDir: string;
  /** How long sockets stay in the map after the cgroup link is gone, so
   * readers can take bytes already redirected to them (detach). */
  drainMs?: number;
  /** Parent of the self-test's throwaway cgroup (the cgroup2 root). */
  selftestParent?: string;
  /** How the cgroup argument is found (default: by path, or by id as
   * detach --id and the node agent give it). */
  resolve?: (cgroup: string) => Cgroup;
}

export interface ReconcileResult extends ApplyResult {
  cgroup: Cgroup;
  pinDir: string;
  plan: Plan;
  /** What an interrupted operation or an incomplete attachment left, now recovered. */
  recovered: string | null;
}

/** The kernel's features, one of them reported absent when the test seam
 * ACCEL_FEATURE_ABSENT names it (seams.ts). */
function preflightProber(): Prober {
  const absent = seam('ACCEL_FEATURE_ABSENT');
  return absent === undefined ? probeFeatures : (c) => probeFeatures(c).map((f) => (f.name === absent ? { ...f, present: false } : f));
}

function describeInterrupted(j: Journal): string {
  const step = j.steps[j.current];
  return `an interrupted ${j.operation} (pid ${j.pid}${step ? `, during ${step}` : ''})`;
}

async function reconcile(cg: Cgroup, desired: AttachmentSpec | null, options: ReconcileOptions): Promise<ReconcileResult> {
  const pinDir = attachmentPinDir(options.bpffs, cg.id);
  const journal = JournalHandle.open(cg.id, cg.path, desired ? 'attach' : 'detach', desired);
  try {
    const interrupted = journal.interrupted;
    const selftestParent = () => options.selftestParent ?? cgroup2Root();
    if (interrupted) {
      log.warn(`recovering from ${describeInterrupted(interrupted)} on ${cg.path}`);
      for (const name of await removeOrphanSelftestCgroups(selftestParent())) log.info(`removed the self-test cgroup ${name} of a process that died`);
    }
    const observed = observe(pinDir, cg.id, interrupted);
    const p = plan(desired, observed, {
      drainMs: options.drainMs ?? 100,
      ...(desired ? { buildId: fastPathBuildId(options.bpfDir) } : {}),
      ...(desired?.intercept ? { interceptBuildId: interceptBuildId(options.bpfDir) } : {}),
    });
    for (const n of p.notes) log.warn(n);
    // An upgrade whose maps cannot be carried over is refused before any step.
    const upgrade = p.steps.find((s) => s.kind === 'upgrade-fastpath');
    if (upgrade) checkUpgrade({ bpffs: options.bpffs, bpfDir: options.bpfDir, cgroup: cg, dir: pinDir }, upgrade.from);
    const upgradeIc = p.steps.find((s) => s.kind === 'upgrade-intercept');
    if (upgradeIc) checkInterceptUpgrade({ bpffs: options.bpffs, bpfDir: options.bpfDir, cgroup: cg, dir: pinDir }, upgradeIc.from);
    log.verbose(`plan for ${cg.path}: ${p.steps.map((s) => s.kind).join(', ') || 'nothing to do'}`);
    let result: ApplyResult;
    try {
      const installing = p.steps.some((s) => s.kind === 'install-fastpath' && s.spec.selftest);
      result = await apply(p, {
        bpffs: options.bpffs,
        bpfDir: options.bpfDir,
        cgroup: cg,
        pinDir,
        selftestParent: installing ? selftestParent() : '',
        hostWide: isHostWide(cg),
        journal,
      });
    } finally {
      removeEmptyPinRoot(options.bpffs);
    }
    const partial = p.steps.find((s) => s.kind === 'clear-fastpath');
    const recovered = interrupted ? describeInterrupted(interrupted) : partial?.kind === 'clear-fastpath' ? partial.reason : null;
    return { ...result, cgroup: cg, pinDir, plan: p, recovered };
  } finally {
    journal.close();
  }
}

/** Attach, or change an attachment to match `spec`. Everything is checked
 * before anything is touched. */
export async function reconcileTo(spec: AttachmentSpec, options: ReconcileOptions): Promise<ReconcileResult> {
  requirePrivileges();
  const cg = (options.resolve ?? ((c: string) => resolveCgroup(c, { command: 'attach' })))(spec.cgroup);
  // Host-wide without the self-test: nobody knows which readers break, for
  // every process. Refused before anything is touched, unless accepted.
  if (isHostWide(cg) && !spec.fastPath.selftest && !spec.fastPath.acceptUnsafeReadersHostWide) {
    throw new AccelError(
      ErrorCodes.HOST_WIDE_UNSAFE,
      `${cg.path} is the root cgroup: without the self-test nobody knows which readers this kernel breaks, for ${hostWideScope()}; nothing was attached. Drop --skip-selftest, or accept the risk with ${ACCEPT_UNSAFE_HOST_WIDE}`,
    );
  }
  requireKernelFeatures('fastpath', preflightProber());
  if (spec.intercept) requireKernelFeatures('intercept', preflightProber());
  requireBpfObjects(options.bpfDir);
  ensureBpffs(options.bpffs);
  // A planted pin root is refused before anything is loaded or removed.
  ownedDir(pinRoot(options.bpffs), { create: false });
  if (spec.intercept) {
    for (const file of INTERCEPT_OBJECTS) {
      if (!fs.existsSync(path.join(options.bpfDir, file)))
        throw new AccelError(ErrorCodes.BPF_OBJECT, `BPF object ${path.join(options.bpfDir, file)} is missing (run npm run build)`);
    }
    const own = readRecord(cg.id);
    // Only an interception of this namespace owns what is in this namespace.
    await checkIntercept(spec.intercept, options.bpffs, own && own.netns === currentNetns() ? own : null);
    checkProxyMark(spec.intercept);
    checkPeerProxyOutside(cg, spec.intercept);
  }
  return reconcile(cg, spec, options);
}

/** Detach: reconcile to nothing. It only unpins and undoes records, so it
 * needs neither the kernel features nor the compiled objects, and works
 * once the build output is gone (an uninstall, a broken build). */
export async function reconcileToNothing(cgroup: string, options: ReconcileOptions): Promise<ReconcileResult> {
  requirePrivileges();
  const cg = (options.resolve ?? ((c: string) => resolveCgroup(c, { command: 'detach' })))(cgroup);
  ensureBpffs(options.bpffs);
  return reconcile(cg, null, options);
}

/** The accel/ directory under bpffs goes with its last attachment, and
 * the node's map of proxy listeners with it once no proxy uses it. */
function removeEmptyPinRoot(bpffs: string): void {
  removeUnusedProxyListeners(bpffs);
  removeUnusedOwners(bpffs);
  try {
    fs.rmdirSync(pinRoot(bpffs));
  } catch {
    /* other attachments remain, or already gone */
  }
}
