/**
 * From the spec and the observed state to the ordered steps between them.
 * Pure: no system call, so every case is a unit test.
 *
 * Order: an interception that must change goes first (no connection is
 * steered to a proxy whose fast path is about to change), then the fast
 * path is cleared, installed or configured, then the interception is
 * installed on the complete fast path. An interception whose hooks, ip
 * rules and routes stay as they are is configured in place instead, so its
 * live connections keep their flows.
 *
 * An interception replaced by another (a re-attach that cannot change in
 * place) is fenced first: the fence (intercept/fence.ts) drops the
 * cgroup's covered SYNs from before the old interception goes until after
 * the new one is complete, so a crash at any step in between leaves the
 * cgroup policed. A fence left by such a crash stays until an interception
 * is complete again (or none is asked for).
 */
import type { FastPathSpec } from '../fastpath/install.js';
import { type InterceptSettings, changesInPlace, sameSettings } from '../intercept/settings.js';
import type { Observed } from './observe.js';
import type { AttachmentSpec } from './spec.js';

export type Step =
  /** The rules of the complete interception about to be replaced, fenced. */
  | { kind: 'fence-intercept'; settings: InterceptSettings }
  | { kind: 'remove-intercept' }
  | { kind: 'remove-fastpath'; drainMs: number }
  /** A partial fast path (pins without a link): nothing live to drain. */
  | { kind: 'clear-fastpath'; reason: string }
  | { kind: 'install-fastpath'; spec: FastPathSpec }
  | { kind: 'configure-fastpath'; bypassPorts: number[]; queueLimit: number }
  /** A complete fast path of another build: its programs replaced in place,
   * its maps kept (src/fastpath/upgrade.ts). */
  | { kind: 'upgrade-fastpath'; from: string | null; to: string }
  | { kind: 'adopt-listeners' }
  | { kind: 'install-intercept'; settings: InterceptSettings }
  /** A kept interception of another build: its programs replaced in place
   * on its hooks, its maps kept (src/intercept/upgrade.ts). */
  | { kind: 'upgrade-intercept'; from: string | null; to: string }
  /** New rules, proxy port or proxy mark, written to the maps in place. */
  | { kind: 'configure-intercept'; settings: InterceptSettings }
  /** A kept interception of a proxy that is not accel's: its listeners
   * registered again (it may have restarted). */
  | { kind: 'register-proxy'; settings: InterceptSettings }
  /** The interception in place (or none, if none is asked for) polices
   * alone again. */
  | { kind: 'unfence-intercept' };

export type StepKind = Step['kind'];

export interface Plan {
  steps: Step[];
  /** What the spec asks that this plan does not do, each one line. */
  notes: string[];
}

const samePorts = (a: number[], b: number[]) => JSON.stringify([...a].sort((x, y) => x - y)) === JSON.stringify([...b].sort((x, y) => x - y));

/** `desired` null: reconcile to nothing (detach). `buildId`: the build of
 * the fast path's programs this accel would install, `interceptBuildId`
 * the interception's (none: no upgrade). */
export function plan(desired: AttachmentSpec | null, observed: Observed, options: { drainMs: number; buildId?: string; interceptBuildId?: string }): Plan {
  const steps: Step[] = [];
  const notes: string[] = [];
  const fp = observed.fastPath;
  const ic = observed.intercept;

  const fastPathStays = desired !== null && fp.kind === 'complete';
  const interceptKept = fastPathStays && ic.kind === 'complete' && desired.intercept !== null && changesInPlace(ic.record.settings, desired.intercept);
  const removing = ic.kind !== 'absent' && !interceptKept;
  // Only a complete interception polices, and only on the fast path's maps
  // can the fence be made: one that stays.
  const fencing = removing && fastPathStays && desired.intercept !== null && ic.kind === 'complete';
  if (fencing) steps.push({ kind: 'fence-intercept', settings: ic.record.settings });
  if (removing) steps.push({ kind: 'remove-intercept' });
  const unfencing = fencing || observed.fenced;

  if (desired === null) {
    if (unfencing) steps.push({ kind: 'unfence-intercept' });
    if (fp.kind === 'complete') steps.push({ kind: 'remove-fastpath', drainMs: options.drainMs });
    if (fp.kind === 'partial') steps.push({ kind: 'clear-fastpath', reason: fp.reason });
    return { steps, notes };
  }

  if (fp.kind === 'complete') {
    const want = desired.fastPath;
    if (options.buildId !== undefined && fp.buildId !== options.buildId) steps.push({ kind: 'upgrade-fastpath', from: fp.buildId, to: options.buildId });
    if (!samePorts(fp.bypassPorts, want.bypassPorts) || fp.queueLimit !== want.queueLimit) {
      steps.push({ kind: 'configure-fastpath', bypassPorts: want.bypassPorts, queueLimit: want.queueLimit });
    }
    if (fp.maxSockets !== want.maxSockets) notes.push(`max sockets stays ${fp.maxSockets}: it is fixed when the maps are made (detach and attach to change it)`);
    if (want.streamVerdict === 'always' && !fp.withStreamVerdict) notes.push('the stream verdict is added only when the fast path is attached anew (detach and attach to add it)');
  } else {
    if (fp.kind === 'partial') steps.push({ kind: 'clear-fastpath', reason: fp.reason });
    steps.push({ kind: 'install-fastpath', spec: desired.fastPath });
  }
  steps.push({ kind: 'adopt-listeners' });
  if (desired.intercept && !interceptKept) steps.push({ kind: 'install-intercept', settings: desired.intercept });
  if (interceptKept && ic.kind === 'complete' && options.interceptBuildId !== undefined) {
    const from = ic.record.build?.buildId ?? null;
    if (from !== options.interceptBuildId) steps.push({ kind: 'upgrade-intercept', from, to: options.interceptBuildId });
  }
  if (desired.intercept && interceptKept && ic.kind === 'complete' && !sameSettings(ic.record.settings, desired.intercept)) {
    steps.push({ kind: 'configure-intercept', settings: desired.intercept });
  }
  // A kept interception of a proxy that is not accel's: its listeners
  // registered again (it may have restarted; install-intercept registers
  // them itself, recorded first).
  if (desired.intercept?.proxyPid && interceptKept) steps.push({ kind: 'register-proxy', settings: desired.intercept });
  if (unfencing) steps.push({ kind: 'unfence-intercept' });
  return { steps, notes };
}
