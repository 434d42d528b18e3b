/** The intercept rule syntax now lives in net/rules.ts (the proxy's policy
 * reads CIDRs and ports too, and components do not import one another).
 * Kept only for cli/commands/attach.ts until its rewrite: delete then. */
export { parseInterceptRule } from '../net/rules.js';
