/** Numeric values from the kernel's uapi <linux/bpf.h> that accel uses. */
export const ProgType = { SCHED_CLS: 3, SOCK_OPS: 13, SK_SKB: 14, SK_MSG: 16 } as const;
export const MapType = { HASH: 1, SOCKMAP: 15, SOCKHASH: 18, SK_STORAGE: 24 } as const;
export const AttachType = {
  CGROUP_SOCK_OPS: 3,
  SK_SKB_STREAM_PARSER: 4,
  SK_SKB_STREAM_VERDICT: 5,
  SK_MSG_VERDICT: 7,
  SK_LOOKUP: 36,
  TCX_INGRESS: 46,
  TCX_EGRESS: 47,
} as const;
/** enum bpf_func_id: the helpers accel's programs call that need probing. */
export const Helper = {
  skb_adjust_room: 50,
  sock_ops_cb_flags_set: 59,
  sock_hash_update: 70,
  msg_redirect_hash: 71,
  sk_redirect_hash: 72,
  skb_ancestor_cgroup_id: 83,
  skc_lookup_tcp: 99,
  sk_storage_get: 107,
  probe_read_kernel: 113,
  get_netns_cookie: 122,
  sk_assign: 124,
  skc_to_tcp_sock: 137,
  loop: 181,
} as const;
export const LinkType = { CGROUP: 3, TCX: 11 } as const;
export const BPF_ANY = 0n;
export const BPF_NOEXIST = 1n;
export const BPF_EXIST = 2n;
