// Kernel features without a kernel: the refusal a made-up kernel gets
// (names and versions), degraded modes, the entry points that check before
// they touch anything, and the BTF reader on a BTF blob built here. The
// real kernel's answers are in test/integration/features.test.ts.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { enumeratorNames } from '../../src/bpf/btf.js';
import { type Component, type Feature, type Prober, featureReport, listFeatures, requireKernelFeatures } from '../../src/bpf/features.js';
import { isAccelError } from '../../src/errors.js';
import { adoptCgroupListeners } from '../../src/fastpath/install.js';
import { log } from '../../src/log.js';
import { SpliceAttachment } from '../../src/splice/objects.js';
import { missingFeatureReason } from '../helpers/features.js';

const COMPONENTS: Component[] = ['fastpath', 'intercept', 'splice', 'listeners'];

/** A kernel that has everything accel lists, except `absent`. */
function kernelWithout(...absent: string[]): Prober {
  return (c) => listFeatures(c).map((f): Feature => ({ ...f, present: !absent.includes(f.name) }));
}

function refusal(fn: () => unknown): string {
  let message = '';
  assert.throws(fn, (e: unknown) => {
    assert.ok(isAccelError(e, 'E_KERNEL_FEATURE'), String(e));
    message = e.message;
    return true;
  });
  return message;
}

describe('kernel features: what each component lists', () => {
  it('every feature names the Linux release that brought it, and one name means one thing everywhere', () => {
    const seen = new Map<string, string>();
    for (const c of COMPONENTS) {
      const features = listFeatures(c);
      assert.ok(features.length > 0, c);
      for (const f of features) {
        assert.match(f.sinceKernel, /^\d+\.\d+$/, `${c}: ${f.name}`);
        const before = seen.get(f.name);
        assert.ok(before === undefined || before === f.sinceKernel, `${f.name}: ${before} and ${f.sinceKernel}`);
        seen.set(f.name, f.sinceKernel);
      }
    }
  });

  it('lists what bpf/*.c uses: the kfuncs, bpf_loop, the iterators, socket storage, TCP_BPF_SOCK_OPS_CB_FLAGS, tcx', () => {
    const names = (c: Component) => listFeatures(c).map((f) => f.name);
    for (const n of [
      'bpf_rdonly_cast kfunc',
      'bpf_cast_to_kern_ctx kfunc',
      'bpf_loop in sk_skb programs',
      'socket storage (sk_storage maps)',
      'bpf_get_netns_cookie in sk_msg programs',
    ]) {
      assert.ok(names('fastpath').includes(n), n);
    }
    for (const n of ['bpf_rdonly_cast kfunc', 'bpf_cast_to_kern_ctx kfunc', 'bpf_sk_redirect_hash in sk_skb programs']) assert.ok(names('splice').includes(n), n);
    for (const n of [
      'bpf_sk_assign in tc programs',
      'bpf_get_netns_cookie in tc programs',
      'bpf_rdonly_cast kfunc',
      'bpf_cast_to_kern_ctx kfunc',
      'cgroup iterator (iter/cgroup)',
      'tcx links',
    ])
      assert.ok(names('intercept').includes(n), n);
    assert.deepEqual(names('listeners'), ['TCP iterator (iter/tcp)', 'TCP_BPF_SOCK_OPS_CB_FLAGS in bpf_setsockopt']);
  });
});

describe('kernel features: the refusal', () => {
  it('a kernel with everything passes every component', () => {
    for (const c of COMPONENTS) assert.deepEqual(requireKernelFeatures(c, kernelWithout()), []);
  });

  it('names each missing feature with the release that has it, and the running kernel, in one line', () => {
    const message = refusal(() => requireKernelFeatures('fastpath', kernelWithout('bpf_rdonly_cast kfunc', 'bpf_loop in sk_skb programs')));
    assert.equal(message.split('\n').length, 1);
    assert.equal(message, `the fast path needs what this kernel (${os.release()}) lacks: bpf_rdonly_cast kfunc (Linux 6.2+), bpf_loop in sk_skb programs (Linux 5.17+)`);
  });

  it('each component is refused for its own features only, and says which component', () => {
    const prober = kernelWithout('bpf_get_netns_cookie in tc programs');
    assert.deepEqual(requireKernelFeatures('fastpath', prober), []);
    assert.match(
      refusal(() => requireKernelFeatures('intercept', prober)),
      /^interception needs .*: bpf_get_netns_cookie in tc programs \(Linux 6\.13\+\)$/,
    );
    assert.match(
      refusal(() => requireKernelFeatures('splice', kernelWithout('bpf_cast_to_kern_ctx kfunc'))),
      /^in-kernel splicing needs .*: bpf_cast_to_kern_ctx kfunc \(Linux 6\.2\+\)$/,
    );
  });

  it('a missing feature the component can do without is a warning, not a refusal: tcx links -> tc filters', (t) => {
    const warn = t.mock.method(log, 'warn', () => log);
    const degraded = requireKernelFeatures('intercept', kernelWithout('tcx links'));
    assert.deepEqual(
      degraded.map((f) => [f.name, f.sinceKernel]),
      [['tcx links', '6.6']],
    );
    assert.equal(warn.mock.callCount(), 1);
    assert.match(String(warn.mock.calls[0]?.arguments[0]), /lacks tcx links \(Linux 6\.6\+\): interception uses tc filters on a clsact qdisc instead/);
    // Degraded and refused at once: the refusal names only what it cannot do without.
    assert.match(
      refusal(() => requireKernelFeatures('intercept', kernelWithout('tcx links', 'bpf_sk_assign in tc programs'))),
      /lacks: bpf_sk_assign in tc programs \(Linux 5\.7\+\)$/,
    );
  });

  it('the report says which components this kernel can run', () => {
    const r = featureReport(kernelWithout('tcx links', 'TCP_BPF_SOCK_OPS_CB_FLAGS in bpf_setsockopt'));
    assert.equal(r.kernel, os.release());
    assert.deepEqual(Object.fromEntries(Object.entries(r.components).map(([c, x]) => [c, [x.usable, x.degraded]])), {
      fastpath: [true, false],
      intercept: [true, true],
      splice: [true, false],
      listeners: [false, false],
    });
  });
});

describe('kernel features: the entry points check first', () => {
  it('recording listeners that predate attach, on a kernel without TCP_BPF_SOCK_OPS_CB_FLAGS, is a warning that says why, and loads nothing', (t) => {
    const warn = t.mock.method(log, 'warn', () => log);
    const n = adoptCgroupListeners('/nonexistent/bpf', { path: '/nonexistent/cgroup', id: 1n }, '/nonexistent/pins', kernelWithout('TCP_BPF_SOCK_OPS_CB_FLAGS in bpf_setsockopt'));
    assert.equal(n, 0);
    assert.equal(warn.mock.callCount(), 1);
    assert.match(
      String(warn.mock.calls[0]?.arguments[0]),
      /^listeners that existed before attach are not known to the fast path until they listen again: this kernel lacks TCP_BPF_SOCK_OPS_CB_FLAGS in bpf_setsockopt \(Linux 6\.10\+\)$/,
    );
  });

  it('in-kernel splicing is refused before bpffs is touched', (t) => {
    // Not a bpffs and not empty: were bpffs looked at first, it would be
    // refused for that (never mounted over), not for the kernel.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'accel-nobpffs-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    fs.writeFileSync(path.join(dir, 'file'), '');
    const message = refusal(() => SpliceAttachment.open({ bpffs: dir, bpfDir: '/nonexistent/bpf', owner: 'test-1', prober: kernelWithout('bpf_loop in sk_skb programs') }));
    assert.match(message, /^in-kernel splicing needs .*: bpf_loop in sk_skb programs \(Linux 5\.17\+\)$/);
  });
});

/** A BTF blob (Documentation/bpf/btf.rst) of the given types and strings. */
function btfBlob(types: number[], strings: string): Buffer {
  const typeBytes = Buffer.alloc(types.length * 4);
  types.forEach((v, i) => typeBytes.writeUInt32LE(v >>> 0, i * 4));
  const strBytes = Buffer.from(strings, 'latin1');
  const header = Buffer.alloc(24);
  header.writeUInt16LE(0xeb9f, 0);
  header.writeUInt8(1, 2);
  header.writeUInt32LE(24, 4);
  header.writeUInt32LE(0, 8);
  header.writeUInt32LE(typeBytes.length, 12);
  header.writeUInt32LE(typeBytes.length, 16);
  header.writeUInt32LE(strBytes.length, 20);
  return Buffer.concat([header, typeBytes, strBytes]);
}

describe('kernel BTF: enumerators', () => {
  it('finds the enumerators of ENUM and ENUM64 types, anonymous ones too, past types of every size', () => {
    const strings = '\0int\0s\0a\0b\0A\0B\0C\0C2\0E64\0D\0';
    const at = (s: string) => strings.indexOf(`\0${s}\0`) + 1;
    const info = (kind: number, vlen: number) => ((kind << 24) | vlen) >>> 0;
    const blob = btfBlob(
      [
        [at('int'), info(1, 0), 4, 32], // [1] INT int: size, encoding
        [at('s'), info(4, 2), 8, at('a'), 1, 0, at('b'), 1, 32], // [2] STRUCT s { a; b; }
        [0, info(6, 2), 4, at('A'), 1008, at('B'), 1009], // [3] anonymous ENUM { A = 1008, B }
        [0, info(13, 1), 1, 0, 1], // [4] FUNC_PROTO int (int)
        [at('E64'), info(19, 2), 8, at('C'), 1, 0, at('C2'), 2, 0], // [5] ENUM64 E64 { C, C2 }
        [0, info(31, 0), 0], // [6] a kind this reader does not know: it stops here
        [0, info(6, 1), 4, at('D'), 1], // [7] ENUM { D }, never reached
      ].flat(),
      strings,
    );
    assert.deepEqual([...enumeratorNames(blob)].sort(), ['A', 'B', 'C', 'C2']);
  });

  it('refuses what is not BTF', () => {
    assert.throws(() => enumeratorNames(Buffer.alloc(32)), /not little-endian BTF/);
  });
});

describe('requireFeature (test/helpers/features.ts)', () => {
  const kernel: Record<string, Feature> = {
    'tcx links': { name: 'tcx links', present: false, sinceKernel: '6.6', degraded: 'tc filters on a clsact qdisc' },
    'TCP iterator (iter/tcp)': { name: 'TCP iterator (iter/tcp)', present: true, sinceKernel: '5.9' },
  };
  const probe = (name: string) => kernel[name] ?? null;

  it('gives the reason to skip: what is missing and the release that has it', () => {
    assert.equal(missingFeatureReason(['TCP iterator (iter/tcp)'], probe), null);
    assert.equal(missingFeatureReason(['TCP iterator (iter/tcp)', 'tcx links'], probe), `this kernel (${os.release()}) lacks tcx links (Linux 6.6+)`);
  });

  it('a feature no component lists is a mistake in the test', () => {
    assert.throws(() => missingFeatureReason(['tcx link'], probe), /no component of accel lists a kernel feature named "tcx link"/);
  });
});
