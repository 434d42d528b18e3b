/**
 * glibc malloc in a long-running agent. Each BPF object load makes libbpf
 * parse the kernel's BTF (5 MB and more, freed right after). glibc then
 * raises its mmap threshold to that size, and its trim threshold to twice
 * that, for the life of the process: later big blocks come from the heaps
 * and stay there, and a heap gives back its free top only beyond 10 MB or
 * so. V8's threads each have a heap (arena) of their own, which
 * malloc_trim does not shrink from the top; at a thousand cgroups they held
 * 10 MB of free memory, resident, for good.
 *
 * Fixed thresholds (glibc's defaults, 128 KB, which also stops their
 * raising): big blocks are mapped and unmapped, and every heap gives back
 * its free top as it goes. malloc_trim gives back the free pages in the
 * middle of them.
 */
import { libcFns } from '../bpf/native.js';

const M_TRIM_THRESHOLD = -1;
const M_MMAP_THRESHOLD = -3;
const THRESHOLD = 128 * 1024;

/** Once, at start. */
export function tuneMalloc(): void {
  libcFns.mallopt(M_MMAP_THRESHOLD, THRESHOLD);
  libcFns.mallopt(M_TRIM_THRESHOLD, THRESHOLD);
}

/** Give malloc's free pages back to the kernel, in every arena. */
export function trimMalloc(): void {
  libcFns.malloc_trim(0);
}
