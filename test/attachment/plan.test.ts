// The planner: a spec and an observed state give the steps between them.
// Pure, so every case runs without root.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { Observed } from '../../src/attachment/observe.js';
import { type Step, plan } from '../../src/attachment/plan.js';
import { type AttachmentSpec, parseSpec } from '../../src/attachment/spec.js';
import type { FastPathObserved } from '../../src/fastpath/pins.js';
import type { InterceptObserved } from '../../src/intercept/remove.js';
import type { InterceptRecord } from '../../src/intercept/record.js';

const spec = (over: Record<string, unknown> = {}, intercept: Record<string, unknown> | null = null): AttachmentSpec =>
  parseSpec({ cgroup: '/sys/fs/cgroup/app', fastPath: over, intercept });
const ic = { ifaces: ['eth0'], rules: ['10.0.0.0/8:80'], proxyPort: 15001 };

const complete = (over: Partial<Extract<FastPathObserved, { kind: 'complete' }>> = {}): FastPathObserved => ({
  kind: 'complete',
  linkId: 7,
  progIds: {},
  buildId: null,
  withStreamVerdict: false,
  bypassPorts: [],
  queueLimit: 4 << 20,
  maxSockets: 65536,
  ...over,
});
const record = (s: AttachmentSpec, complete = true): InterceptRecord => ({
  version: 2,
  cgroupId: '1',
  cgroupPath: s.cgroup,
  netns: 1,
  settings: s.intercept!,
  complete,
  added: { acceptLocal: null, routes: [], rules: [], hooks: [], pins: [] },
});
const observed = (fastPath: FastPathObserved, intercept: InterceptObserved = { kind: 'absent' }, fenced = false): Observed => ({ fastPath, intercept, fenced, interrupted: null });
const kinds = (steps: Step[]) => steps.map((s) => s.kind);
const opts = { drainMs: 100 };

describe('plan: attach', () => {
  it('nothing there: install the fast path, adopt listeners', () => {
    assert.deepEqual(kinds(plan(spec(), observed({ kind: 'absent' }), opts).steps), ['install-fastpath', 'adopt-listeners']);
  });
  it('a partial fast path is cleared before the install', () => {
    const p = plan(spec(), observed({ kind: 'partial', reason: 'no link' }), opts);
    assert.deepEqual(kinds(p.steps), ['clear-fastpath', 'install-fastpath', 'adopt-listeners']);
  });
  it('already as asked: only the listeners are adopted again', () => {
    assert.deepEqual(kinds(plan(spec(), observed(complete()), opts).steps), ['adopt-listeners']);
  });
  it('new bypass ports or queue limit: configured in place, not reinstalled', () => {
    const p = plan(spec({ bypassPorts: [9, 7], queueLimit: 1 << 20 }), observed(complete({ bypassPorts: [7] })), opts);
    assert.deepEqual(kinds(p.steps), ['configure-fastpath', 'adopt-listeners']);
    assert.deepEqual(p.steps[0], { kind: 'configure-fastpath', bypassPorts: [7, 9], queueLimit: 1 << 20 });
  });
  it('a new queue limit alone is configured too', () => {
    assert.deepEqual(kinds(plan(spec({ queueLimit: 1 << 20 }), observed(complete()), opts).steps), ['configure-fastpath', 'adopt-listeners']);
  });
  it('the same ports in another order are no change', () => {
    assert.deepEqual(kinds(plan(spec({ bypassPorts: [9, 7] }), observed(complete({ bypassPorts: [9, 7] })), opts).steps), ['adopt-listeners']);
  });
  it('another build of the programs: upgraded in place, first, and only then configured; the same build is adopted', () => {
    const p = plan(spec({ bypassPorts: [7] }), observed(complete({ buildId: 'aaaaaaaaaaaaaaaa' })), { ...opts, buildId: 'bbbbbbbbbbbbbbbb' });
    assert.deepEqual(kinds(p.steps), ['upgrade-fastpath', 'configure-fastpath', 'adopt-listeners']);
    assert.deepEqual(p.steps[0], { kind: 'upgrade-fastpath', from: 'aaaaaaaaaaaaaaaa', to: 'bbbbbbbbbbbbbbbb' });
    assert.deepEqual(kinds(plan(spec(), observed(complete({ buildId: 'bbbbbbbbbbbbbbbb' })), { ...opts, buildId: 'bbbbbbbbbbbbbbbb' }).steps), ['adopt-listeners']);
    // No record (an accel before build ids): another build.
    assert.deepEqual(kinds(plan(spec(), observed(complete()), { ...opts, buildId: 'bbbbbbbbbbbbbbbb' }).steps), ['upgrade-fastpath', 'adopt-listeners']);
    // Nothing to upgrade on a fast path installed anew, nor on detach.
    assert.deepEqual(kinds(plan(spec(), observed({ kind: 'absent' }), { ...opts, buildId: 'bbbbbbbbbbbbbbbb' }).steps), ['install-fastpath', 'adopt-listeners']);
    assert.deepEqual(kinds(plan(null, observed(complete()), { ...opts, buildId: 'bbbbbbbbbbbbbbbb' }).steps), ['remove-fastpath']);
  });
  it('an interception of another build, kept: upgraded in place after the fast path, before it is configured; the same build, or one installed anew, is not', () => {
    const s = spec({}, ic);
    const kept = (buildId?: string): InterceptObserved => ({
      kind: 'complete',
      record: { ...record(s), ...(buildId ? { build: { buildId, at: '', how: 'installed', from: null } } : {}) },
    });
    const both = { ...opts, buildId: 'bbbbbbbbbbbbbbbb', interceptBuildId: 'dddddddddddddddd' };
    const p = plan(s, observed(complete({ buildId: 'aaaaaaaaaaaaaaaa' }), kept('cccccccccccccccc')), both);
    assert.deepEqual(kinds(p.steps), ['upgrade-fastpath', 'adopt-listeners', 'upgrade-intercept']);
    assert.deepEqual(p.steps[2], { kind: 'upgrade-intercept', from: 'cccccccccccccccc', to: 'dddddddddddddddd' });
    // New rules too: upgraded, then configured in place.
    const rules = spec({}, { ...ic, rules: ['10.0.0.0/8:81'] });
    assert.deepEqual(kinds(plan(rules, observed(complete({ buildId: 'bbbbbbbbbbbbbbbb' }), kept('cccccccccccccccc')), both).steps), [
      'adopt-listeners',
      'upgrade-intercept',
      'configure-intercept',
    ]);
    assert.deepEqual(kinds(plan(s, observed(complete({ buildId: 'bbbbbbbbbbbbbbbb' }), kept('dddddddddddddddd')), both).steps), ['adopt-listeners']);
    // No build in the record (an accel before build ids): another build.
    assert.deepEqual(kinds(plan(s, observed(complete({ buildId: 'bbbbbbbbbbbbbbbb' }), kept()), both).steps), ['adopt-listeners', 'upgrade-intercept']);
    // Installed anew, or replaced (not kept): no upgrade.
    assert.deepEqual(kinds(plan(s, observed({ kind: 'absent' }), both).steps), ['install-fastpath', 'adopt-listeners', 'install-intercept']);
    const moved = spec({}, { ...ic, ifaces: ['eth1'] });
    assert.equal(kinds(plan(moved, observed(complete({ buildId: 'bbbbbbbbbbbbbbbb' }), kept('cccccccccccccccc')), both).steps).includes('upgrade-intercept'), false);
  });
  it('the same interception settings, their fields in another order (as read back from the record), are no change', () => {
    const s = spec({}, ic);
    const r = record(s);
    const reordered = { ...r, settings: { ...r.settings, rules: r.settings.rules.map((x) => Object.fromEntries(Object.entries(x).reverse()) as typeof x) } };
    assert.deepEqual(kinds(plan(s, observed(complete(), { kind: 'complete', record: reordered }), opts).steps), ['adopt-listeners']);
  });
  it('what cannot change in place is a note, not a reinstall that would cut live connections', () => {
    const p = plan(spec({ maxSockets: 10, streamVerdict: 'always' }), observed(complete()), opts);
    assert.deepEqual(kinds(p.steps), ['adopt-listeners']);
    assert.equal(p.notes.length, 2);
  });
  it("a proxy that is not accel's is registered on every attach, before the interception hands it connections", () => {
    const s = spec({}, { ...ic, proxyPid: 4242 });
    assert.deepEqual(
      kinds(plan(s, observed({ kind: 'absent' }), opts).steps),
      ['install-fastpath', 'adopt-listeners', 'install-intercept'],
      'install-intercept registers it, recorded first',
    );
    assert.deepEqual(kinds(plan(s, observed(complete(), { kind: 'complete', record: record(s) }), opts).steps), ['adopt-listeners', 'register-proxy']);
    const restarted = spec({}, { ...ic, proxyPid: 4343 });
    assert.deepEqual(kinds(plan(restarted, observed(complete(), { kind: 'complete', record: record(s) }), opts).steps), [
      'fence-intercept',
      'remove-intercept',
      'adopt-listeners',
      'install-intercept',
      'unfence-intercept',
    ]);
    assert.deepEqual(
      kinds(plan(spec({}, ic), observed(complete(), { kind: 'complete', record: record(spec({}, ic)) }), opts).steps),
      ['adopt-listeners'],
      'accel proxy registers itself',
    );
  });
  it('interception is installed after the fast path', () => {
    assert.deepEqual(kinds(plan(spec({}, ic), observed({ kind: 'absent' }), opts).steps), ['install-fastpath', 'adopt-listeners', 'install-intercept']);
  });
  it('the same interception stays; new rules, proxy port or proxy mark are configured in place', () => {
    const s = spec({}, ic);
    assert.deepEqual(kinds(plan(s, observed(complete(), { kind: 'complete', record: record(s) }), opts).steps), ['adopt-listeners']);
    for (const change of [{ rules: ['10.0.0.0/8:81'] }, { proxyPort: 15009 }, { proxyMark: 7 }]) {
      const other = spec({}, { ...ic, ...change });
      assert.deepEqual(
        kinds(plan(other, observed(complete(), { kind: 'complete', record: record(s) }), opts).steps),
        ['adopt-listeners', 'configure-intercept'],
        JSON.stringify(change),
      );
    }
  });
  it('new interfaces, marks, table, priority, address families or flow map size replace the interception, fenced from before the removal to after the install', () => {
    const s = spec({}, ic);
    for (const change of [{ ifaces: ['eth1'] }, { interceptMark: 5 }, { table: 9 }, { priority: 9 }, { rules: ['[fd00::/64]:80'] }, { maxFlows: 100 }]) {
      const other = spec({}, { ...ic, ...change });
      const p = plan(other, observed(complete(), { kind: 'complete', record: record(s) }), opts);
      assert.deepEqual(kinds(p.steps), ['fence-intercept', 'remove-intercept', 'adopt-listeners', 'install-intercept', 'unfence-intercept'], JSON.stringify(change));
      assert.deepEqual(p.steps[0], { kind: 'fence-intercept', settings: s.intercept }, 'fenced with the rules of the interception in force');
    }
    // No interception asked for: nothing to keep policed.
    assert.deepEqual(kinds(plan(spec(), observed(complete(), { kind: 'complete', record: record(s) }), opts).steps), ['remove-intercept', 'adopt-listeners']);
  });
  it('a fence left by a swap that stopped half way stays until an interception is complete again', () => {
    const s = spec({}, ic);
    const other = spec({}, { ...ic, maxFlows: 100 });
    const at = (intercept: InterceptObserved, desired: AttachmentSpec | null = s) => kinds(plan(desired, observed(complete(), intercept, true), opts).steps);
    // Stopped before or during the removal: the old one is recorded complete.
    assert.deepEqual(at({ kind: 'complete', record: record(other) }), ['fence-intercept', 'remove-intercept', 'adopt-listeners', 'install-intercept', 'unfence-intercept']);
    // Between removal and install, or during the install.
    assert.deepEqual(at({ kind: 'absent' }), ['adopt-listeners', 'install-intercept', 'unfence-intercept']);
    assert.deepEqual(at({ kind: 'partial', record: record(s, false) }), ['remove-intercept', 'adopt-listeners', 'install-intercept', 'unfence-intercept']);
    // After the install, or the spec went back to the old settings.
    assert.deepEqual(at({ kind: 'complete', record: record(s) }), ['adopt-listeners', 'unfence-intercept']);
    // No interception asked for any more, or a detach.
    assert.deepEqual(at({ kind: 'absent' }, spec()), ['adopt-listeners', 'unfence-intercept']);
    assert.deepEqual(at({ kind: 'partial', record: record(s, false) }, null), ['remove-intercept', 'unfence-intercept', 'remove-fastpath']);
  });
  it('a partial or orphaned interception is removed and made again', () => {
    const s = spec({}, ic);
    for (const kind of ['partial', 'orphaned'] as const) {
      assert.deepEqual(kinds(plan(s, observed(complete(), { kind, record: record(s, false) }), opts).steps), ['remove-intercept', 'adopt-listeners', 'install-intercept']);
    }
  });
  it('an interception over a fast path that must be made again goes first', () => {
    const s = spec({}, ic);
    const p = plan(s, observed({ kind: 'partial', reason: 'x' }, { kind: 'complete', record: record(s) }), opts);
    assert.deepEqual(kinds(p.steps), ['remove-intercept', 'clear-fastpath', 'install-fastpath', 'adopt-listeners', 'install-intercept']);
  });
});

describe('plan: detach', () => {
  it('removes interception first, then the fast path with its drain time', () => {
    const s = spec({}, ic);
    const p = plan(null, observed(complete(), { kind: 'complete', record: record(s) }), { drainMs: 250 });
    assert.deepEqual(p.steps, [{ kind: 'remove-intercept' }, { kind: 'remove-fastpath', drainMs: 250 }]);
  });
  it('a partial fast path is cleared; nothing there is nothing to do', () => {
    assert.deepEqual(kinds(plan(null, observed({ kind: 'partial', reason: 'x' }), opts).steps), ['clear-fastpath']);
    assert.deepEqual(plan(null, observed({ kind: 'absent' }), opts).steps, []);
  });
});

describe('plan: properties', () => {
  const fastPathObserved = fc.oneof(
    fc.constant<FastPathObserved>({ kind: 'absent' }),
    fc.constant<FastPathObserved>({ kind: 'partial', reason: 'x' }),
    fc.record({ bypassPorts: fc.uniqueArray(fc.integer({ min: 1, max: 65535 }), { maxLength: 3 }), queueLimit: fc.nat() }).map((o) => complete(o)),
  );
  const specs = fc.record({
    bypassPorts: fc.uniqueArray(fc.integer({ min: 1, max: 65535 }), { maxLength: 3 }),
    queueLimit: fc.integer({ min: 0, max: 0x7fffffff }),
    intercept: fc.boolean(),
  });
  const icKinds = fc.constantFrom('absent', 'partial', 'complete', 'orphaned', 'other-settings');
  const interceptObserved = (kind: string): InterceptObserved => {
    if (kind === 'absent') return { kind: 'absent' };
    if (kind === 'other-settings') return { kind: 'complete', record: record(spec({}, { ...ic, proxyPort: 15009 })) };
    return { kind: kind as 'partial' | 'complete' | 'orphaned', record: record(spec({}, ic), kind === 'complete') };
  };

  it('a plan reaches the spec: planning again on the state it leaves finds nothing to change', () => {
    fc.assert(
      fc.property(specs, fastPathObserved, icKinds, fc.boolean(), (raw, fp, icKind, fenced) => {
        const s = spec({ bypassPorts: raw.bypassPorts, queueLimit: raw.queueLimit }, raw.intercept ? ic : null);
        const k = kinds(plan(s, observed(fp, interceptObserved(icKind), fenced), opts).steps);
        // A complete interception replaced by another is fenced from before
        // its removal to after the new one is installed; a fence that is up
        // is always taken down, last.
        if (icKind !== 'absent' && k.includes('remove-intercept') && k.includes('install-intercept') && fp.kind === 'complete' && icKind !== 'partial' && icKind !== 'orphaned') {
          assert.ok(k.indexOf('fence-intercept') >= 0 && k.indexOf('fence-intercept') < k.indexOf('remove-intercept'), 'fenced before the removal');
        }
        if (fenced || k.includes('fence-intercept')) assert.equal(k[k.length - 1], 'unfence-intercept', 'unfenced last');
        else assert.equal(k.includes('unfence-intercept'), false);
        // The state the steps leave, as observe would read it.
        const fastPathAfter =
          k.includes('install-fastpath') || k.includes('configure-fastpath') ? complete({ bypassPorts: s.fastPath.bypassPorts, queueLimit: s.fastPath.queueLimit }) : fp;
        const interceptAfter: InterceptObserved =
          k.includes('install-intercept') || k.includes('configure-intercept')
            ? { kind: 'complete', record: record(s) }
            : k.includes('remove-intercept')
              ? { kind: 'absent' }
              : interceptObserved(icKind);
        const after = observed(fastPathAfter, interceptAfter);
        // The state reached is the spec, judged apart from the planner.
        assert.equal(fastPathAfter.kind, 'complete');
        if (fastPathAfter.kind === 'complete') {
          assert.deepEqual([[...fastPathAfter.bypassPorts].sort((x, y) => x - y), fastPathAfter.queueLimit], [s.fastPath.bypassPorts, s.fastPath.queueLimit]);
        }
        if (s.intercept) assert.deepEqual(interceptAfter.kind === 'complete' ? interceptAfter.record.settings : null, s.intercept);
        else assert.equal(interceptAfter.kind, 'absent');
        // An interception is never installed over one that is there.
        if (k.includes('install-intercept') && icKind !== 'absent') assert.ok(k.indexOf('remove-intercept') >= 0 && k.indexOf('remove-intercept') < k.indexOf('install-intercept'));
        assert.deepEqual(kinds(plan(s, after, opts).steps), ['adopt-listeners']);
        // Detach from there removes what is there, interception first.
        assert.deepEqual(kinds(plan(null, after, opts).steps), s.intercept ? ['remove-intercept', 'remove-fastpath'] : ['remove-fastpath']);
        // A detach takes a fence down before the fast path it lives on.
        if (fp.kind === 'complete') {
          const d = kinds(plan(null, observed(fp, interceptObserved(icKind), true), opts).steps);
          assert.ok(d.indexOf('unfence-intercept') >= 0 && d.indexOf('unfence-intercept') < d.indexOf('remove-fastpath'));
        }
      }),
      { numRuns: 300 },
    );
  });
  it('every removal comes before every install', () => {
    fc.assert(
      fc.property(specs, fastPathObserved, fc.boolean(), (raw, fp, hadIntercept) => {
        const s = spec({ bypassPorts: raw.bypassPorts }, raw.intercept ? ic : null);
        const icObs: InterceptObserved = hadIntercept ? { kind: 'complete', record: record(spec({}, { ...ic, proxyPort: 15009 })) } : { kind: 'absent' };
        const k = kinds(plan(s, observed(fp, icObs), opts).steps);
        const lastRemoval = Math.max(k.lastIndexOf('remove-intercept'), k.lastIndexOf('clear-fastpath'), k.lastIndexOf('remove-fastpath'));
        const firstInstall = Math.min(
          ...['install-fastpath', 'install-intercept', 'configure-fastpath', 'configure-intercept'].map((x) =>
            k.includes(x as Step['kind']) ? k.indexOf(x as Step['kind']) : Infinity,
          ),
        );
        return lastRemoval < firstInstall;
      }),
    );
  });
});

describe('spec', () => {
  it('normalises: ports sorted and unique, rules parsed, defaults filled', () => {
    const s = spec({ bypassPorts: [9, 7, 9] }, ic);
    assert.deepEqual(s.fastPath.bypassPorts, [7, 9]);
    assert.equal(s.fastPath.selftest, true);
    assert.equal(s.intercept?.rules[0]?.text, '10.0.0.0/8:80');
  });
  it('bad input is one E_USAGE naming the field', () => {
    assert.throws(
      () => spec({ bypassPorts: [70000] }),
      (e: Error & { code?: string }) => e.code === 'E_USAGE' && /fastPath\.bypassPorts\.0/.test(e.message),
    );
    assert.throws(
      () => spec({ queueLimits: 1 }),
      (e: Error & { code?: string }) => e.code === 'E_USAGE',
    );
    assert.throws(
      () => spec({}, { ...ic, rules: ['10.0.0.300/8:80'] }),
      (e: Error & { code?: string }) => e.code === 'E_USAGE' && /invalid intercept rule/.test(e.message),
    );
  });
});
