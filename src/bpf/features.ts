/** Probing the running kernel for what the fast path and interception need. */
import os from 'node:os';
import { AccelError, ErrorCodes } from '../errors.js';
import { describeErrno, errnoName } from './errno.js';
import { closeFd } from './fd.js';
import { bpf } from './native.js';
import { AttachType, Helper, MapType, ProgType } from './uapi.js';

export interface Feature {
  name: string;
  present: boolean;
}

export type Prober = () => Feature[];

/** libbpf's probes load tiny programs / create tiny maps: 1 = supported. */
export const probeFastPathFeatures: Prober = () => [
  { name: 'sockhash map', present: bpf.probe_map_type(MapType.SOCKHASH, null) === 1 },
  { name: 'sk_storage map', present: bpf.probe_map_type(MapType.SK_STORAGE, null) === 1 },
  { name: 'sock_ops program', present: bpf.probe_prog_type(ProgType.SOCK_OPS, null) === 1 },
  { name: 'sk_msg program', present: bpf.probe_prog_type(ProgType.SK_MSG, null) === 1 },
  { name: 'sk_skb program', present: bpf.probe_prog_type(ProgType.SK_SKB, null) === 1 },
  {
    name: 'bpf_msg_redirect_hash helper',
    present: bpf.probe_helper(ProgType.SK_MSG, Helper.msg_redirect_hash, null) === 1,
  },
  {
    name: 'bpf_get_netns_cookie in sk_msg',
    present: bpf.probe_helper(ProgType.SK_MSG, Helper.get_netns_cookie, null) === 1,
  },
  {
    name: 'bpf_get_netns_cookie in sock_ops',
    present: bpf.probe_helper(ProgType.SOCK_OPS, Helper.get_netns_cookie, null) === 1,
  },
];

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
