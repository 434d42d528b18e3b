/** The observed state of one cgroup's attachment: what its pins, its
 * interception record and the kernel say is there now. */
import { type FastPathObserved, observeFastPath } from '../fastpath/pins.js';
import { type InterceptObserved, observeIntercept } from '../intercept/remove.js';
import { fenceLeft } from '../intercept/fence.js';
import type { Journal } from './journal.js';

export interface Observed {
  fastPath: FastPathObserved;
  intercept: InterceptObserved;
  /** Something of a re-attach's fence is left (intercept/fence.ts): a swap
   * of interceptions that stopped half way. */
  fenced: boolean;
  /** An operation that stopped half way (its process died), if any. */
  interrupted: Journal | null;
}

export function observe(pinDir: string, cgroupId: bigint, interrupted: Journal | null): Observed {
  return { fastPath: observeFastPath(pinDir, cgroupId), intercept: observeIntercept(cgroupId), fenced: fenceLeft(pinDir), interrupted };
}
