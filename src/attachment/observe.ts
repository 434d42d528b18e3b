/** The observed state of one cgroup's attachment: what its pins, its
 * interception record and the kernel say is there now. */
import { type FastPathObserved, observeFastPath } from '../fastpath/pins.js';
import { type InterceptObserved, observeIntercept } from '../intercept/remove.js';
import type { Journal } from './journal.js';

export interface Observed {
  fastPath: FastPathObserved;
  intercept: InterceptObserved;
  /** An operation that stopped half way (its process died), if any. */
  interrupted: Journal | null;
}

export function observe(pinDir: string, cgroupId: bigint, interrupted: Journal | null): Observed {
  return { fastPath: observeFastPath(pinDir, cgroupId), intercept: observeIntercept(cgroupId), interrupted };
}
