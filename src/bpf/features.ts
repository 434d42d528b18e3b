/** Probing the running kernel for what the fast path needs. */
import { bpf } from './native.js';
import { Helper, MapType, ProgType } from './uapi.js';

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
