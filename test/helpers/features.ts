/**
 * Skipping tests on a kernel that lacks what they need (src/bpf/features.ts),
 * with the reason: what is missing and the Linux release that has it.
 *
 *   describe('interception', { skip: kernelLacks('intercept') }, ...)
 *   it('...', (t) => { if (!requireFeature(t, 'tcx links')) return; ... })
 */
import os from 'node:os';
import type { TestContext } from 'node:test';
import { COMPONENTS, type Component, type Feature, describeFeatures, listFeatures, probeFeature } from '../../src/bpf/features.js';

/**
 * Why a test that needs the named features cannot run on this kernel, or
 * null if it can. A name that no component lists is a mistake in the test:
 * it throws.
 */
export function missingFeatureReason(names: string[], probe: (name: string) => Feature | null = probeFeature): string | null {
  const absent = names
    .map((name) => {
      const f = probe(name);
      if (!f) throw new Error(`no component of accel lists a kernel feature named "${name}"`);
      return f;
    })
    .filter((f) => !f.present);
  return absent.length ? `this kernel (${os.release()}) lacks ${describeFeatures(absent)}` : null;
}

const isComponent = (s: string): s is Component => Object.hasOwn(COMPONENTS, s);

/** For the `skip` option of describe() and it(): the reason, or false. Each
 * need is a feature's name, or a component ('intercept'): every feature it
 * cannot do without. */
export function kernelLacks(...needs: string[]): string | false {
  const names = needs.flatMap((n) =>
    isComponent(n)
      ? listFeatures(n)
          .filter((f) => f.degraded === undefined)
          .map((f) => f.name)
      : [n],
  );
  return missingFeatureReason(names) ?? false;
}

/**
 * True if this kernel has every need (as kernelLacks takes them). If not,
 * the test is marked skipped with the reason and the caller returns:
 * `if (!requireFeature(t, 'tcx links')) return;`.
 */
export function requireFeature(t: TestContext, ...needs: string[]): boolean {
  const reason = kernelLacks(...needs);
  if (reason === false) return true;
  t.skip(reason);
  return false;
}
