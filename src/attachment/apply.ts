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
import { configureIntercept, installIntercept, observeIntercept, registerPeerProxy, removeIntercept } from '../intercept/install.js';
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
    case 'configure-fastpath':
      return configureFastPath(ctx.pinDir, step);
    case 'adopt-listeners':
      out.listenersAdopted = adoptCgroupListeners(ctx.bpfDir, ctx.cgroup, ctx.pinDir, probeFeatures, deeperAttachments(ctx));
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
  return null;
}

export async function apply(plan: Plan, ctx: ApplyContext): Promise<ApplyResult> {
  const out: ApplyResult = { withStreamVerdict: null, selftest: [], listenersAdopted: 0 };
  const kinds = plan.steps.map((s) => s.kind);
  const done: Step[] = [];
  for (const [i, step] of plan.steps.entries()) {
    ctx.journal.begin(kinds, i);
    failpoint(`before:${step.kind}` as Failpoint);
    try {
      await runStep(step, ctx, out);
    } catch (err) {
      // install-fastpath cleans nothing itself: a failure before its link
      // leaves pins, which the rollback removes with the rest.
      const undo = [...(step.kind === 'install-fastpath' ? [step] : []), ...done.reverse()].map(undoOf).filter((s): s is Step => s !== null);
      for (const u of undo) {
        await runStep(u, ctx, out).catch((e: unknown) => log.error(`while undoing ${step.kind}: ${(e as Error).message}`));
      }
      throw err;
    }
    failpoint(`after:${step.kind}` as Failpoint);
    done.push(step);
  }
  return out;
}
