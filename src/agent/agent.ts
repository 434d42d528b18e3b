/**
 * The node agent's reconcile loop. Each tick: read what the configuration
 * selects (a bounded scan of the cgroup tree, and the pods of this node),
 * then bring each selected cgroup to its spec through src/attachment/
 * (reconcileTo, under the per-cgroup lock), and each attachment of the
 * agent's that is no longer selected, or whose cgroup is gone, to nothing.
 *
 * Only what changed is touched: a cgroup seen before with the same spec is
 * left alone; a cgroup seen for the first time whose attachment already is
 * as asked (a restarted agent) is adopted, with no step taken; one that
 * runs another build of the fast path's programs (the agent was upgraded)
 * has them replaced in place and is reported upgraded.
 */
import fs from 'node:fs';
import path from 'node:path';
import { plan } from '../attachment/plan.js';
import { interruptedJournal } from '../attachment/journal.js';
import { observe } from '../attachment/observe.js';
import { reconcileTo, reconcileToNothing } from '../attachment/reconcile.js';
import { type SelfTestRecord, saveSelftestRecord, selftestRecord } from '../attachment/selftest-record.js';
import type { AttachmentSpec } from '../attachment/spec.js';
import { cgroup2Root } from '../cgroup/cgroup.js';
import { isAccelError } from '../errors.js';
import { fastPathBuildId } from '../fastpath/build.js';
import { PinNames } from '../fastpath/pins.js';
import { log } from '../log.js';
import { attachmentPinDir } from '../paths.js';
import { type AgentConfig, loadAgentConfig } from './config.js';
import { type CompiledSelection, type Target, compileSelections, desiredTargets } from './desired.js';
import type { PodSource } from './kube.js';
import { type OwnedEntry, readOwned, writeOwned } from './owned.js';
import { trimMalloc, tuneMalloc } from './malloc.js';
import { cgroupStillThere } from './scan.js';

export type AttachmentState = 'attached' | 'adopted' | 'upgraded' | 'failed';

export interface Tracked {
  target: Target;
  state: AttachmentState;
  /** The spec key last brought about (null: never, it failed). */
  applied: string | null;
  failures: number;
  retryAt: number;
  error: string | null;
}

export type AgentEvent =
  | { event: 'attached' | 'updated' | 'adopted' | 'upgraded'; cgroup: string; id: string; selection: string; steps: string[]; pod?: string }
  | { event: 'detached'; cgroup: string; id: string; reason: 'removed' | 'deselected' | 'exit'; steps: string[] }
  | { event: 'failed'; cgroup: string; id: string; selection: string; error: string; code: string }
  | { event: 'config'; ok: boolean; error?: string }
  | { event: 'ready'; attachments: number };

export interface AgentOptions {
  configFile: string;
  bpffs: string;
  bpfDir: string;
  /** Pods of this node; made from the configuration when not given. */
  podSource?: PodSource;
  /** Load the Kubernetes client and watch pods (kube.ts). */
  makePodSource?: (nodeName: string | undefined) => Promise<PodSource>;
  emit: (e: AgentEvent) => void;
}

/** What the agent counts (exposed as metrics). */
export interface AgentStats {
  reconciles: Record<'attached' | 'updated' | 'adopted' | 'upgraded' | 'detached' | 'failed', number>;
  configReloads: { ok: number; failed: number };
  scans: number;
  lastScanVisited: number;
  lastScanTruncated: boolean;
  /** When the loop last finished a reconcile or a tick (for /healthz). */
  lastProgressAt: number;
}

const MAX_BACKOFF_MS = 30_000;

/** A turn of the event loop. A reconcile is synchronous work (object loads,
 * map writes) behind a promise: a thousand of them in one tick kept /healthz
 * and /metrics unanswered for minutes, and V8's own tasks (incremental
 * marking, the memory reducer) waiting with them. */
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
const TRIM_EVERY_MS = 5_000;

function sameTarget(a: Target, b: Target): boolean {
  return a.path === b.path && a.rel === b.rel && a.selection === b.selection && a.specKey === b.specKey && a.pod?.namespace === b.pod?.namespace && a.pod?.name === b.pod?.name;
}

export class Agent {
  readonly tracked = new Map<bigint, Tracked>();
  readonly stats: AgentStats = {
    reconciles: { attached: 0, updated: 0, adopted: 0, upgraded: 0, detached: 0, failed: 0 },
    configReloads: { ok: 0, failed: 0 },
    scans: 0,
    lastScanVisited: 0,
    lastScanTruncated: false,
    lastProgressAt: Date.now(),
  };
  ready = false;
  private config: AgentConfig;
  private compiled: CompiledSelection[];
  private root: string;
  private owned: Map<bigint, OwnedEntry>;
  private pods: PodSource | null = null;
  /** The self-test runs once per agent and setup; later installs reuse it. */
  private selftests = new Map<string, { withStreamVerdict: boolean; record: SelfTestRecord }>();
  private timer: NodeJS.Timeout | null = null;
  private lastTrimAt = 0;
  private running: Promise<void> | null = null;
  private stopped = false;

  constructor(private readonly options: AgentOptions) {
    this.config = loadAgentConfig(options.configFile);
    this.compiled = compileSelections(this.config);
    this.root = this.config.cgroupRoot ?? cgroup2Root();
    this.owned = new Map(readOwned().map((e) => [BigInt(e.id), e]));
    tuneMalloc();
  }

  get cgroupRoot(): string {
    return this.root;
  }

  async start(): Promise<void> {
    if (this.options.podSource) this.pods = this.options.podSource;
    else if (this.config.kubernetes.enabled) this.pods = await (this.options.makePodSource ?? (await import('./kube.js')).watchNodePods)(this.config.kubernetes.nodeName);
    this.loop();
  }

  private loop(): void {
    if (this.stopped) return;
    this.running = this.tick()
      .catch((err: unknown) => {
        log.error(`agent: ${(err as Error).message}`);
      })
      .finally(() => {
        this.running = null;
        if (this.stopped) return;
        this.timer = setTimeout(() => this.loop(), this.config.pollIntervalMs);
      });
  }

  /** Run a tick now (after a configuration change) rather than at the next poll. */
  kick(): void {
    if (this.stopped || this.running) return;
    if (this.timer) clearTimeout(this.timer);
    this.loop();
  }

  /** Read the configuration again; a bad one is reported and the old one kept. */
  reload(): boolean {
    try {
      const config = loadAgentConfig(this.options.configFile);
      const root = config.cgroupRoot ?? cgroup2Root();
      if (config.kubernetes.enabled && !this.pods) throw new Error('kubernetes.enabled can only be turned on at start (restart the agent)');
      this.config = config;
      this.compiled = compileSelections(config);
      this.root = root;
      this.stats.configReloads.ok++;
      this.options.emit({ event: 'config', ok: true });
      log.info(`configuration ${this.options.configFile} reloaded`);
      this.kick();
      return true;
    } catch (err) {
      this.stats.configReloads.failed++;
      this.options.emit({ event: 'config', ok: false, error: (err as Error).message });
      log.error(`configuration not reloaded, the previous one stays: ${(err as Error).message}`);
      return false;
    }
  }

  async tick(): Promise<void> {
    const pods = this.pods?.pods() ?? [];
    const desired = desiredTargets(this.root, this.compiled, pods, this.config.maxScan);
    this.stats.scans++;
    this.stats.lastScanVisited = desired.visited;
    if (desired.truncated && !this.stats.lastScanTruncated)
      log.warn(`the scan of ${this.root} stopped at maxScan (${this.config.maxScan}) directories: cgroups beyond it are not seen`);
    this.stats.lastScanTruncated = desired.truncated;
    const worked = () => Object.values(this.stats.reconciles).reduce((a, b) => a + b, 0);
    const before = worked();
    let trimmedAt = before;
    // After loading objects, malloc's free memory goes back (malloc.ts).
    const trim = (every: number) => {
      if (worked() - trimmedAt < every) return;
      trimmedAt = worked();
      this.trimMalloc();
    };
    for (const t of desired.targets.values()) {
      if (this.stopped) return;
      await this.ensure(t);
      await turn();
      trim(20);
    }
    // Until the pods are listed, an attachment of a pod is not known to be unwanted.
    const podsKnown = !this.pods || this.pods.synced();
    const gone = new Set([...this.tracked.keys(), ...this.owned.keys()].filter((id) => !desired.targets.has(id)));
    for (const id of gone) {
      if (this.stopped) return;
      const tr = this.tracked.get(id);
      const entry = this.owned.get(id);
      const p = tr?.target.path ?? entry?.path ?? '';
      const exists = cgroupStillThere(p, id);
      if (exists && !podsKnown) continue;
      if (!entry) {
        // Tracked but never attached (it failed): nothing of ours to remove.
        this.tracked.delete(id);
        continue;
      }
      await this.release(id, p, tr?.target.rel ?? entry.path, exists ? 'deselected' : 'removed');
      await turn();
      trim(20);
    }
    trim(1);
    // And every few seconds in any case: V8's threads free theirs into their
    // own malloc arenas after the work is done (a major GC, a compile), some
    // 10 MB at a thousand cgroups that stayed until the next reconcile.
    if (Date.now() - this.lastTrimAt >= TRIM_EVERY_MS) this.trimMalloc();
    this.stats.lastProgressAt = Date.now();
    if (!this.ready && podsKnown) {
      this.ready = true;
      this.options.emit({ event: 'ready', attachments: [...this.tracked.values()].filter((t) => t.state !== 'failed').length });
    }
  }

  /** Give malloc's free memory back to the kernel (every arena's). */
  private trimMalloc(): void {
    trimMalloc();
    this.lastTrimAt = Date.now();
  }

  /** The spec to apply: with the self-test of an earlier install reused. */
  private withSelftest(spec: AttachmentSpec): AttachmentSpec {
    const cached = spec.fastPath.selftest ? this.selftests.get(spec.fastPath.streamVerdict) : undefined;
    if (!cached) return spec;
    return { ...spec, fastPath: { ...spec.fastPath, selftest: false, streamVerdict: cached.withStreamVerdict ? 'always' : 'auto' } };
  }

  private setOwned(id: bigint, entry: OwnedEntry | null): void {
    if (entry) this.owned.set(id, entry);
    else this.owned.delete(id);
    writeOwned([...this.owned.values()]);
  }

  private async ensure(t: Target): Promise<void> {
    this.stats.lastProgressAt = Date.now();
    let prev = this.tracked.get(t.id);
    if (prev && prev.applied === t.specKey && prev.state !== 'failed') {
      // The same target as last poll is kept, and this poll's copy dropped
      // young: a thousand of them replaced every poll is garbage that lives
      // long enough to reach V8's old generation.
      if (!sameTarget(prev.target, t)) prev.target = t;
      // Still there? Detached by hand (accel detach), it is attached anew.
      if (fs.existsSync(path.join(attachmentPinDir(this.options.bpffs, t.id), PinNames.link))) return;
      log.warn(`the attachment of ${t.path} is gone (detached by hand?): attaching it anew`);
      this.tracked.delete(t.id);
      prev = undefined;
    }
    if (prev?.state === 'failed' && prev.target.specKey === t.specKey && Date.now() < prev.retryAt) return;
    const pod = t.pod ? { pod: `${t.pod.namespace}/${t.pod.name}` } : {};
    const base = { cgroup: t.rel, id: String(t.id), selection: t.selection, ...pod };
    try {
      if (!prev) {
        // First sight in this process: already as asked is adopted untouched.
        const pinDir = attachmentPinDir(this.options.bpffs, t.id);
        const p = plan(t.spec, observe(pinDir, t.id, interruptedJournal(t.id)), { drainMs: 0, buildId: fastPathBuildId(this.options.bpfDir) });
        if (p.steps.every((s) => s.kind === 'adopt-listeners')) {
          this.tracked.set(t.id, { target: t, state: 'adopted', applied: t.specKey, failures: 0, retryAt: 0, error: null });
          this.setOwned(t.id, { id: String(t.id), path: t.path, selection: t.selection });
          this.stats.reconciles.adopted++;
          this.options.emit({ event: 'adopted', ...base, steps: [] });
          log.info(`adopted the attachment of ${t.path} (selection ${t.selection}): already as asked`);
          return;
        }
      }
      const spec = this.withSelftest(t.spec);
      // Owned before it is made: a crash half way leaves it ours to finish or clean.
      this.setOwned(t.id, { id: String(t.id), path: t.path, selection: t.selection });
      const r = await reconcileTo(spec, { bpffs: this.options.bpffs, bpfDir: this.options.bpfDir });
      const kinds = r.plan.steps.map((s) => s.kind);
      if (kinds.includes('install-fastpath')) {
        const cached = this.selftests.get(t.spec.fastPath.streamVerdict);
        if (r.selftest.length && r.withStreamVerdict !== null) {
          this.selftests.set(t.spec.fastPath.streamVerdict, { withStreamVerdict: r.withStreamVerdict, record: selftestRecord(r.selftest, r.withStreamVerdict) });
        } else if (cached && t.spec.fastPath.selftest) saveSelftestRecord(t.id, cached.record);
      }
      // Found running another build, replaced in place: upgraded, not re-created.
      const upgraded = (kinds.includes('upgrade-fastpath') || kinds.includes('upgrade-intercept')) && !kinds.includes('install-fastpath');
      const event = upgraded ? 'upgraded' : prev && prev.applied !== null ? 'updated' : 'attached';
      this.tracked.set(t.id, {
        target: t,
        state: upgraded ? 'upgraded' : (prev?.state === 'adopted' || prev?.state === 'upgraded') && event === 'updated' ? prev.state : 'attached',
        applied: t.specKey,
        failures: 0,
        retryAt: 0,
        error: null,
      });
      this.stats.reconciles[event]++;
      this.options.emit({ event, ...base, steps: kinds });
      log.info(`${event} ${t.path} (selection ${t.selection}): ${kinds.join(', ') || 'nothing to do'}`);
    } catch (err) {
      const failures = (prev?.failures ?? 0) + 1;
      const message = (err as Error).message;
      const code = isAccelError(err) ? err.code : 'E_INTERNAL';
      this.tracked.set(t.id, {
        target: t,
        state: 'failed',
        applied: prev?.applied ?? null,
        failures,
        retryAt: Date.now() + Math.min(MAX_BACKOFF_MS, 500 * 2 ** (failures - 1)),
        error: message,
      });
      // A cgroup that went away under us is cleaned as removed on the next tick.
      if (!cgroupStillThere(t.path, t.id) && !this.owned.has(t.id)) this.tracked.delete(t.id);
      this.stats.reconciles.failed++;
      this.options.emit({ event: 'failed', ...base, error: message, code });
      log.error(`cannot reconcile ${t.path} (selection ${t.selection}): ${message}`);
    }
  }

  private async release(id: bigint, p: string, rel: string, reason: 'removed' | 'deselected' | 'exit'): Promise<void> {
    const exists = cgroupStillThere(p, id);
    try {
      const r = await reconcileToNothing(exists ? p : String(id), {
        bpffs: this.options.bpffs,
        bpfDir: this.options.bpfDir,
        drainMs: exists ? 100 : 0,
        resolve: () => ({ id, path: exists ? p : `(removed cgroup ${id})` }),
      });
      this.tracked.delete(id);
      this.setOwned(id, null);
      this.stats.reconciles.detached++;
      const steps = r.plan.steps.map((s) => s.kind);
      this.options.emit({ event: 'detached', cgroup: rel, id: String(id), reason, steps });
      log.info(`detached ${p} (${reason}): ${steps.join(', ') || 'nothing was left'}`);
    } catch (err) {
      this.stats.reconciles.failed++;
      log.error(`cannot detach ${p} (${reason}): ${(err as Error).message}`);
    }
  }

  /** Stop the loop; with detach, remove every attachment the agent owns. */
  async stop(detach: boolean): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    await this.pods?.stop().catch(() => {});
    if (!detach) return;
    for (const [id, entry] of [...this.owned]) await this.release(id, entry.path, this.tracked.get(id)?.target.rel ?? entry.path, 'exit');
  }
}
