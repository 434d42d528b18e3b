/**
 * User-space mirror of the splice's struct and counters in
 * bpf/include/accel.h (sksplice.c). test/maps/layout.test.ts compares
 * SPLICE_BTF with the BTF of layout.btf.o.
 */
import type { BtfMirrors } from './shared.js';

/** struct accel_splice_sock */
export const SpliceSockLayout = {
  size: 16,
  fields: {
    bytes_redirected: { offset: 0, size: 8 },
    next_seq: { offset: 8, size: 4 },
    seq_known: { offset: 12, size: 4 },
  },
} as const;

/** enum accel_splice_counter, in order, with the C enumerator names. */
export const SPLICE_COUNTER_ENUM = {
  bytes_redirected: 'ACCEL_SPLICE_BYTES_REDIRECTED',
  skbs_redirected: 'ACCEL_SPLICE_SKBS_REDIRECTED',
  skbs_passed: 'ACCEL_SPLICE_SKBS_PASSED',
  pairs_spliced: 'ACCEL_SPLICE_PAIRS_SPLICED',
  pairs_closed: 'ACCEL_SPLICE_PAIRS_CLOSED',
  fins_dropped: 'ACCEL_SPLICE_FINS_DROPPED',
  bytes_repeated: 'ACCEL_SPLICE_BYTES_REPEATED',
  bytes_repeat_sent: 'ACCEL_SPLICE_BYTES_REPEAT_SENT',
  holds: 'ACCEL_SPLICE_HOLDS',
  releases: 'ACCEL_SPLICE_RELEASES',
} as const;
export type SpliceCounterName = keyof typeof SPLICE_COUNTER_ENUM;
export const SPLICE_COUNTERS = Object.keys(SPLICE_COUNTER_ENUM) as SpliceCounterName[];
export type SpliceCounters = Record<SpliceCounterName, bigint>;

export const SPLICE_BTF: BtfMirrors = {
  structs: { accel_splice_sock: SpliceSockLayout },
  enums: {
    accel_splice_counter: { enumerators: Object.values(SPLICE_COUNTER_ENUM), max: 'ACCEL_SPLICE_CNT_MAX' },
  },
};
