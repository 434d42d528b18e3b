/**
 * Carry out a plan, one step at a time, each written to the journal before
 * it starts. A step that throws stops the plan; what this run installed is
 * then removed again, so a failed attach leaves nothing half-installed. A
 * crash (no chance to roll back) leaves a state the next plan converges
 * from.
 */
import fs from 'node:fs';
import path from 'node:path';
import { makePinDir, removePinDir } from '../bpf/bpffs.js';
import { probeFeatures } from '../bpf/features.js';
import { ancestors } from '../cgroup/cgroup.js';
import { PinNames } from '../fastpath/pins.js';
import { attachmentPinDir, listAttachmentIds } from '../paths.js';
import type { Cgroup } from '../cgroup/cgroup.js';
import { failpoint, type Failpoint } from '../failpoint.js';
import { adoptCgroupListeners, configureFastPath, installFastPath, removeFastPath } from '../fastpath/install.js';
import type { SelfTestResult } from '../fastpath/selftest.js';
import { observeFastPath } from '../fastpath/pins.js';
import { fenceIntercept, unfence } from '../intercept/fence.js';
import { removeBuildRecord } from '../fastpath/build.js';
import { upgradeFastPath } from '../fastpath/upgrade.js';
import { configureIntercept, installIntercept } from '../intercept/install.js';
import { upgradeIntercept } from '../intercept/upgrade.js';
import { registerPeerProxy } from '../intercept/peer-proxy.js';
import { observeIntercept, removeIntercept } from '../intercept/remove.js';
import type { InterceptSettings } from '../intercept/settings.js';
import { log } from '../log.js';
import { removeOwner } from '../maps/owners.js';
import type { JournalHandle } from './journal.js';
import type { Plan, Step } from './plan.js';
import { removeSelftestRecord, saveSelftestRecord, selftestRecord } from './selftest-record.js';

export interface ApplyContext {
  bpffs: string;
  bpfDir: string;
  cgroup: Cgroup;
  pinDir: string;
  selftestParent: string;
  /** The cgroup is the root of the cgroup2 mount. */
  hostWide: boolean;
  journal: JournalHandle;
}

export interface ApplyResult {
  withStreamVerdict: boolean | null;
  selftest: SelfTestResult[];
  listenersAdopted: number;
}

async function runStep(step: Step, ctx: ApplyContext, out: ApplyResult): Promise<void> {
  switch (step.kind) {
    case 'fence-intercept':
      return fenceIntercept(ctx.cgroup, ctx.bpffs, ctx.pinDir, ctx.bpfDir, step.settings);
    case 'unfence-intercept':
      return unfence(ctx.pinDir);
    case 'remove-intercept':
      return removeIntercept(observeIntercept(ctx.cgroup.id), ctx.bpffs, ctx.pinDir);
    // The self-test record goes after the pins: a crash in between leaves
    // a record of nothing, which the next install overwrites.
    case 'remove-fastpath':
      await removeFastPath({ bpffs: ctx.bpffs, cgroupId: ctx.cgroup.id, dir: ctx.pinDir }, step.drainMs);
      removeSelftestRecord(ctx.cgroup.id);
      return adoptIntoAncestor(ctx);
    case 'clear-fastpath':
      log.warn(`removing an incomplete attachment of ${ctx.cgroup.path}: ${step.reason}`);
      removeOwner(ctx.bpffs, ctx.cgroup.id);
      removePinDir(ctx.pinDir);
      removeBuildRecord(ctx.cgroup.id);
      return removeSelftestRecord(ctx.cgroup.id);
    case 'install-fastpath': {
      makePinDir(ctx.bpffs, ctx.pinDir);
      const r = await installFastPath(
        { bpffs: ctx.bpffs, bpfDir: ctx.bpfDir, cgroup: ctx.cgroup, dir: ctx.pinDir, selftestParent: ctx.selftestParent, hostWide: ctx.hostWide },
        step.spec,
      );
      out.withStreamVerdict = r.withStreamVerdict;
      out.selftest = r.selftest;
      // What status and verify report later: the reader kinds this kernel
      // breaks, or that nobody tested them (--skip-selftest).
      saveSelftestRecord(ctx.cgroup.id, selftestRecord(r.selftest, r.withStreamVerdict));
      return;
    }
    case 'upgrade-fastpath':
      upgradeFastPath({ bpffs: ctx.bpffs, bpfDir: ctx.bpfDir, cgroup: ctx.cgroup, dir: ctx.pinDir }, step.from);
      return;
    case 'configure-fastpath':
      return configureFastPath(ctx.pinDir, step);
    case 'adopt-listeners':
      out.listenersAdopted = adoptCgroupListeners(ctx.bpfDir, ctx.cgroup, ctx.pinDir, probeFeatures, deeperAttachments(ctx));
      return;
    case 'upgrade-intercept':
      await upgradeIntercept({ bpffs: ctx.bpffs, bpfDir: ctx.bpfDir, cgroup: ctx.cgroup, dir: ctx.pinDir }, step.from);
      return;
    case 'install-intercept':
      await installIntercept(ctx.cgroup, ctx.bpffs, ctx.pinDir, ctx.bpfDir, step.settings);
      return;
    case 'register-proxy':
      registerPeerProxy(ctx.bpffs, step.settings);
      return;
    case 'configure-intercept':
      return configureIntercept(ctx.cgroup, ctx.pinDir, ctx.bpfDir, step.settings);
  }
}

/** The other attachments under the pin root: those below this cgroup own
 * their subtrees' sockets and listeners. */
function deeperAttachments(ctx: ApplyContext): Set<bigint> {
  return new Set(listAttachmentIds(ctx.bpffs).filter((id) => id !== ctx.cgroup.id));
}

/**
 * A nested attachment is gone: the nearest attached cgroup above it owns
 * its subtree's sockets again, and records the listeners there that only
 * the removed attachment knew (they would otherwise join its fast path
 * only when they listen again). Best effort: detach needs no BPF object,
 * and without one this is a warning.
 */
function adoptIntoAncestor(ctx: ApplyContext): void {
  for (const up of ancestors(ctx.cgroup)) {
    const dir = attachmentPinDir(ctx.bpffs, up.id);
    if (!fs.existsSync(path.join(dir, PinNames.link))) continue;
    const n = adoptCgroupListeners(ctx.bpfDir, up, dir, probeFeatures, new Set(listAttachmentIds(ctx.bpffs).filter((id) => id !== up.id && id !== ctx.cgroup.id)));
    log.info(`${up.path} owns the sockets of ${ctx.cgroup.path} again${n ? ` (${n} listeners recorded)` : ''}`);
    return;
  }
}

/** What undoes a step that installed something, for the rollback. */
function undoOf(step: Step): Step | null {
  if (step.kind === 'install-fastpath') return { kind: 'remove-fastpath', drainMs: 0 };
  if (step.kind === 'install-intercept') return { kind: 'remove-intercept' };
  if (step.kind === 'fence-intercept') return { kind: 'unfence-intercept' };
  return null;
}

/**
 * The interception a remove-intercept step is about to take away, if it
 * is a complete one of this namespace: what the rollback puts back.
 */
function removedInterception(step: Step, ctx: ApplyContext): InterceptSettings | null {
  if (step.kind !== 'remove-intercept') return null;
  const observed = observeIntercept(ctx.cgroup.id);
  return observed.kind === 'complete' ? observed.record.settings : null;
}

/** A step as the rollback sees it: what it took away, if an interception. */
interface Done {
  step: Step;
  removed: InterceptSettings | null;
}

export async function apply(plan: Plan, ctx: ApplyContext): Promise<ApplyResult> {
  const out: ApplyResult = { withStreamVerdict: null, selftest: [], listenersAdopted: 0 };
  const kinds = plan.steps.map((s) => s.kind);
  const done: Done[] = [];
  for (const [i, step] of plan.steps.entries()) {
    ctx.journal.begin(kinds, i);
    const current: Done = { step, removed: removedInterception(step, ctx) };
    try {
      failpoint(`before:${step.kind}` as Failpoint);
      await runStep(step, ctx, out);
      failpoint(`after:${step.kind}` as Failpoint);
    } catch (err) {
      await rollback(current, done, ctx, out);
      throw err;
    }
    done.push(current);
  }
  return out;
}

/**
 * Undo, newest first, the step that failed and the steps done before it.
 * What an install added is removed (install-fastpath cleans nothing
 * itself: a failure before its link leaves pins; installIntercept removes
 * what it added before it throws, and removing it again is a no-op). An
 * interception that a remove-intercept step took away is installed again
 * with its old settings: a cgroup that was intercepted stays intercepted.
 * The fence goes only once an interception is complete again: if the old
 * one could not be put back, the fence stays (the cgroup's covered
 * connections are refused) until the next attach converges.
 */
async function rollback(failed: Done, done: Done[], ctx: ApplyContext, out: ApplyResult): Promise<void> {
  for (const d of [failed, ...[...done].reverse()]) {
    try {
      if (d.removed) await restoreIntercept(d.removed, ctx, out);
      else if (d.step.kind === 'fence-intercept' && observeIntercept(ctx.cgroup.id).kind !== 'complete') {
        log.error(`the fence of ${ctx.cgroup.path} stays: no interception is complete; attach again to converge`);
      } else {
        const u = undoOf(d.step);
        if (u) await runStep(u, ctx, out);
      }
    } catch (e) {
      log.error(`while undoing ${d.step.kind} after ${failed.step.kind} failed: ${(e as Error).message}`);
    }
  }
}

async function restoreIntercept(settings: InterceptSettings, ctx: ApplyContext, out: ApplyResult): Promise<void> {
  if (observeFastPath(ctx.pinDir, ctx.cgroup.id).kind !== 'complete') {
    log.error(`the previous interception of ${ctx.cgroup.path} cannot be put back: the rollback removed its fast path`);
    return;
  }
  // Whatever is left of the old or the new one first (a no-op if nothing).
  await removeIntercept(observeIntercept(ctx.cgroup.id), ctx.bpffs, ctx.pinDir);
  await runStep({ kind: 'install-intercept', settings }, ctx, out);
  log.warn(`the previous interception of ${ctx.cgroup.path} is back in place after the failure`);
}
