/**
 * What each component of accel needs from the running kernel, probed rather
 * than assumed: the program and map types, the helpers as each program type
 * may call them, the kfuncs, iterators and constants that bpf/*.c uses.
 * Each feature names the mainline release that brought it, so that a kernel
 * without one is refused with a line that says what to run instead.
 *
 * How each kind is asked:
 * - program and map types: libbpf's probes (libbpf_probe_bpf_prog_type /
 *   _map_type), which load a tiny program or create a tiny map;
 * - a helper in a program type: the verifier, asked with a program that
 *   calls it (helperAvailable; libbpf 1.1's own probe misreads 6.x);
 * - a kfunc, an iterator target (bpf_iter_<target>), a uapi constant: the
 *   kernel's BTF (a FUNC, an enumerator of that name; src/bpf/btf.ts);
 * - tcx links: a link to an interface that does not exist (probeTcx).
 *
 * What every kernel with these has is not probed one by one (the map
 * helpers, bpf_get_socket_cookie, bpf_redirect, the skb load/store and
 * checksum helpers, bpf_sk_release, array, hash and LRU maps), nor what no
 * probe can ask without running the programs (a SOCKHASH lookup from an
 * sk_skb program, the helpers of the TCP iterator, which came before the
 * TCP_BPF_SOCK_OPS_CB_FLAGS it needs).
 */
import os from 'node:os';
import { AccelError, ErrorCodes, isAccelError } from '../errors.js';
import { log } from '../log.js';
import { kernelBtf, releaseKernelBtf } from './btf.js';
import { describeErrno, errnoName } from './errno.js';
import { closeFd } from './fd.js';
import { bpf, progLoadWithLog } from './native.js';
import { AttachType, Helper, MapType, ProgType } from './uapi.js';

/** The parts of accel that each need their own set of kernel features. */
export type Component = 'fastpath' | 'intercept' | 'splice' | 'listeners';

export const COMPONENTS: Record<Component, string> = {
  fastpath: 'the fast path',
  intercept: 'interception',
  splice: 'in-kernel splicing',
  listeners: 'recording listeners that predate attach',
};

export interface Feature {
  name: string;
  present: boolean;
  /** The mainline Linux release that brought it ("6.2"). */
  sinceKernel: string;
  /** Set when the component works without it, and says how (a degraded
   * mode): its absence is then a warning, not a refusal. */
  degraded?: string;
}

/** The features `component` needs, each probed (or, in tests, made up). */
export type Prober = (component: Component) => Feature[];

interface Requirement {
  name: string;
  sinceKernel: string;
  degraded?: string;
  probe: () => boolean;
}

/** A libbpf probe's answer: 1 supported, 0 not, < 0 the probe failed. */
function answer(what: string, rc: number): boolean {
  if (rc < 0) {
    const code = -rc === os.constants.errno.EPERM ? ErrorCodes.PERMISSION : ErrorCodes.KERNEL_FEATURE;
    throw new AccelError(code, `cannot probe the kernel for ${what}: ${describeErrno(-rc)}`, { errno: errnoName(-rc) });
  }
  return rc === 1;
}

const progType = (name: string, sinceKernel: string, type: number): Requirement => ({
  name,
  sinceKernel,
  probe: () => answer(name, bpf.probe_prog_type(type, null) as number),
});

const mapType = (name: string, sinceKernel: string, type: number): Requirement => ({
  name,
  sinceKernel,
  probe: () => answer(name, bpf.probe_map_type(type, null) as number),
});

const PROG_NAMES: Record<number, string> = { [ProgType.SCHED_CLS]: 'tc', [ProgType.SOCK_OPS]: 'sock_ops', [ProgType.SK_SKB]: 'sk_skb', [ProgType.SK_MSG]: 'sk_msg' };

/** What the verifier says of a call to a helper that programs of this type
 * may not make: "invalid func" (a helper it does not know), "unknown func"
 * (one the type may not call, on older kernels), "program of this type
 * cannot use helper" (the same, on newer ones, 6.18 among them), "helper
 * call is not allowed in probe" (one the type may call only in some of its
 * programs). libbpf 1.1's probe knows the first two, so on 6.18 it answers
 * "supported" for every helper the kernel knows, in any type. */
const HELPER_REFUSED = /\b(invalid func|unknown func|cannot use helper|helper call is not allowed)\b/;

/**
 * May programs of `type` call the helper with id `helperId`? Loads `call
 * helper; exit` with the verifier's log: it either loads (a helper whose
 * arguments the context satisfies) or fails, and only the phrases above
 * mean "not in this type"; any other complaint (an argument not set, say)
 * comes after the verifier took the call.
 */
export function helperAvailable(type: number, helperId: number): boolean {
  const insns = Buffer.alloc(16);
  insns[0] = 0x85; // BPF_JMP | BPF_CALL
  insns.writeInt32LE(helperId, 4);
  insns[8] = 0x95; // BPF_JMP | BPF_EXIT
  const verifierLog = Buffer.alloc(4096);
  const fd = bpf.prog_load(type, 'accel_probe', 'GPL', insns, 2, progLoadWithLog(verifierLog)) as number;
  if (fd >= 0) {
    closeFd(fd);
    return true;
  }
  const end = verifierLog.indexOf(0);
  const text = verifierLog.toString('utf8', 0, end < 0 ? verifierLog.length : end);
  if (HELPER_REFUSED.test(text)) return false;
  if (text) return true; // the call was taken; something else was refused
  // No log: refused before the verifier ran, as a program type this kernel
  // does not have is (that type's own feature says so).
  if (-fd === os.constants.errno.EINVAL) return false;
  const code = -fd === os.constants.errno.EPERM ? ErrorCodes.PERMISSION : ErrorCodes.KERNEL_FEATURE;
  throw new AccelError(code, `cannot probe the kernel for helper #${helperId} in program type ${type}: ${describeErrno(-fd)}`, { errno: errnoName(-fd) });
}

/** bpf_<helper> as programs of `type` may call it. */
const helper = (helperName: keyof typeof Helper, type: number, sinceKernel: string): Requirement => {
  const name = `bpf_${helperName} in ${PROG_NAMES[type] ?? `program type ${type}`} programs`;
  return { name, sinceKernel, probe: () => helperAvailable(type, Helper[helperName]) };
};

/** Is the kernel's BTF there at all (CO-RE relocations and kfuncs need it)? */
function hasKernelBtf(): boolean {
  try {
    kernelBtf();
    return true;
  } catch (err) {
    if (isAccelError(err, ErrorCodes.KERNEL_FEATURE)) return false;
    throw err;
  }
}

const btfFunc = (name: string, sinceKernel: string, func: string): Requirement => ({ name, sinceKernel, probe: () => hasKernelBtf() && kernelBtf().hasFunc(func) });
const kfunc = (func: string, sinceKernel: string) => btfFunc(`${func} kfunc`, sinceKernel, func);

const KERNEL_BTF: Requirement = { name: 'kernel BTF (CONFIG_DEBUG_INFO_BTF)', sinceKernel: '5.4', probe: hasKernelBtf };
const SK_SKB_PROGRAMS = progType('sk_skb programs', '4.14', ProgType.SK_SKB);
const SOCKHASH_MAPS = mapType('sockhash maps', '4.18', MapType.SOCKHASH);
const RDONLY_CAST = kfunc('bpf_rdonly_cast', '6.2');
const CAST_TO_KERN_CTX = kfunc('bpf_cast_to_kern_ctx', '6.2');
/** What bpf/include/accel_repeat.h needs: both stream verdicts cut with it. */
const REPEAT_CUT: Requirement[] = [
  CAST_TO_KERN_CTX,
  helper('loop', ProgType.SK_SKB, '5.17'),
  helper('skb_adjust_room', ProgType.SK_SKB, '5.11'),
  helper('skc_to_tcp_sock', ProgType.SK_SKB, '5.10'),
];

/** Per component, what its objects use (bpf/*.c and their headers). */
const REQUIREMENTS: Record<Component, Requirement[]> = {
  // sockops.c, skmsg.c (+ accel_backpressure.h), stream_verdict.c.
  fastpath: [
    KERNEL_BTF,
    progType('sock_ops programs', '4.13', ProgType.SOCK_OPS),
    progType('sk_msg programs', '4.17', ProgType.SK_MSG),
    SK_SKB_PROGRAMS,
    SOCKHASH_MAPS,
    mapType('socket storage (sk_storage maps)', '5.2', MapType.SK_STORAGE),
    helper('sock_ops_cb_flags_set', ProgType.SOCK_OPS, '4.16'),
    helper('sock_hash_update', ProgType.SOCK_OPS, '4.18'),
    helper('sk_storage_get', ProgType.SOCK_OPS, '5.3'),
    helper('get_netns_cookie', ProgType.SOCK_OPS, '5.15'),
    helper('msg_redirect_hash', ProgType.SK_MSG, '4.18'),
    helper('sk_storage_get', ProgType.SK_MSG, '5.8'),
    helper('probe_read_kernel', ProgType.SK_MSG, '5.8'),
    helper('get_netns_cookie', ProgType.SK_MSG, '5.15'),
    RDONLY_CAST,
    ...REPEAT_CUT,
  ],
  // tc_tproxy.c, and the cgroup's level from the kernel (cgroup_level.c).
  // The kfuncs: the lo namespace's cookie (bpf_cast_to_kern_ctx) and a
  // proxy listener's cgroup (bpf_rdonly_cast: tc programs may not call
  // bpf_sk_ancestor_cgroup_id).
  intercept: [
    KERNEL_BTF,
    progType('tc programs', '4.1', ProgType.SCHED_CLS),
    helper('skb_ancestor_cgroup_id', ProgType.SCHED_CLS, '4.19'),
    helper('skc_lookup_tcp', ProgType.SCHED_CLS, '5.2'),
    helper('sk_assign', ProgType.SCHED_CLS, '5.7'),
    helper('get_netns_cookie', ProgType.SCHED_CLS, '6.13'),
    RDONLY_CAST,
    CAST_TO_KERN_CTX,
    btfFunc('cgroup iterator (iter/cgroup)', '6.1', 'bpf_iter_cgroup'),
    { name: 'tcx links', sinceKernel: '6.6', degraded: 'tc filters on a clsact qdisc', probe: tcxSupported },
  ],
  // sksplice.c (+ accel_repeat.h), and iter_splice_hold.c, whose program
  // the kernel runs with each socket locked since 5.15.
  splice: [
    KERNEL_BTF,
    SK_SKB_PROGRAMS,
    SOCKHASH_MAPS,
    helper('sk_redirect_hash', ProgType.SK_SKB, '4.18'),
    RDONLY_CAST,
    ...REPEAT_CUT,
    btfFunc('TCP iterator with the socket locked (iter/tcp)', '5.15', 'bpf_iter_tcp'),
  ],
  // iter_listeners.c: on top of the fast path's maps.
  listeners: [
    btfFunc('TCP iterator (iter/tcp)', '5.9', 'bpf_iter_tcp'),
    {
      name: 'TCP_BPF_SOCK_OPS_CB_FLAGS in bpf_setsockopt',
      sinceKernel: '6.10',
      probe: () => hasKernelBtf() && kernelBtf().hasEnumerator('TCP_BPF_SOCK_OPS_CB_FLAGS'),
    },
  ],
};

/** What `component` needs, without asking the kernel. */
export function listFeatures(component: Component): Omit<Feature, 'present'>[] {
  return REQUIREMENTS[component].map((r) => ({ name: r.name, sinceKernel: r.sinceKernel, ...(r.degraded ? { degraded: r.degraded } : {}) }));
}

const probed = new Map<string, boolean>();

function probeOne(r: Requirement): Feature {
  let present = probed.get(r.name);
  if (present === undefined) {
    present = r.probe();
    probed.set(r.name, present);
  }
  return { name: r.name, present, sinceKernel: r.sinceKernel, ...(r.degraded ? { degraded: r.degraded } : {}) };
}

/** The running kernel, asked once per feature and process (the kernel's
 * BTF is freed after each round: the answers are kept, not it). */
export const probeFeatures: Prober = (component) => {
  try {
    return REQUIREMENTS[component].map(probeOne);
  } finally {
    releaseKernelBtf();
  }
};

/** One feature by name, of whichever component lists it; null if none does. */
export function probeFeature(name: string): Feature | null {
  try {
    for (const list of Object.values(REQUIREMENTS)) {
      const r = list.find((x) => x.name === name);
      if (r) return probeOne(r);
    }
    return null;
  } finally {
    releaseKernelBtf();
  }
}

/** "bpf_rdonly_cast kfunc (Linux 6.2+), ...". */
export function describeFeatures(features: Feature[]): string {
  return features.map((f) => `${f.name} (Linux ${f.sinceKernel}+)`).join(', ');
}

/**
 * Refuse, with E_KERNEL_FEATURE and one line naming each missing feature
 * and the release that has it, a component this kernel cannot run. A
 * missing feature the component can do without is a warning; those are
 * returned.
 */
export function requireKernelFeatures(component: Component, prober: Prober = probeFeatures): Feature[] {
  const features = prober(component);
  const missing = features.filter((f) => !f.present && f.degraded === undefined);
  if (missing.length) {
    throw new AccelError(ErrorCodes.KERNEL_FEATURE, `${COMPONENTS[component]} needs what this kernel (${os.release()}) lacks: ${describeFeatures(missing)}`, {
      result: { component, missing },
    });
  }
  const degraded = features.filter((f) => !f.present && f.degraded !== undefined);
  for (const f of degraded) log.warn(`this kernel lacks ${describeFeatures([f])}: ${COMPONENTS[component]} uses ${f.degraded} instead`);
  return degraded;
}

export interface ComponentReport {
  name: string;
  /** Every feature it cannot do without is there. */
  usable: boolean;
  /** Usable, without some feature it can do without. */
  degraded: boolean;
  features: Feature[];
}

/** Every component, with each of its features as the kernel answers. */
export function featureReport(prober: Prober = probeFeatures): { kernel: string; components: Record<Component, ComponentReport> } {
  const components = {} as Record<Component, ComponentReport>;
  for (const [c, name] of Object.entries(COMPONENTS) as [Component, string][]) {
    const features = prober(c);
    const usable = features.every((f) => f.present || f.degraded !== undefined);
    components[c] = { name, usable, degraded: usable && features.some((f) => !f.present), features };
  }
  return { kernel: os.release(), components };
}

/** `r0 = 0; exit`: a SCHED_CLS program that is never attached anywhere. */
const TRIVIAL_PROGRAM = Buffer.from([0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0]);

/**
 * Can programs be attached to tc hooks through tcx links (kernel 6.6+ with
 * CONFIG_NET_XGRESS)? Asks the kernel for real without touching any
 * interface: a tcx link to ifindex 0, which no device has, fails with
 * ENODEV where tcx links exist and EINVAL where they do not.
 */
function probeTcx(): boolean {
  const prog = bpf.prog_load(ProgType.SCHED_CLS, 'accel_tcx_probe', 'Dual BSD/GPL', TRIVIAL_PROGRAM, 2, null) as number;
  if (prog < 0) {
    const code = -prog === os.constants.errno.EPERM ? ErrorCodes.PERMISSION : ErrorCodes.KERNEL_FEATURE;
    throw new AccelError(code, `cannot load a tc program to probe for tcx links: ${describeErrno(-prog)}`, { errno: errnoName(-prog) });
  }
  try {
    const link = bpf.link_create(prog, 0, AttachType.TCX_INGRESS, null) as number;
    if (link >= 0) {
      closeFd(link);
      return true;
    }
    return -link === os.constants.errno.ENODEV;
  } finally {
    closeFd(prog);
  }
}

let tcx: boolean | undefined;

/** Whether this kernel has tcx links; probed once per process. */
export function tcxSupported(): boolean {
  tcx ??= probeTcx();
  return tcx;
}
