/**
 * The proxy's --mark and attach's --proxy-mark must be equal. The tc
 * program lets a SYN carrying the proxy mark go out unsteered; a proxy in
 * the attached cgroup whose upstream sockets carry another mark has each of
 * its upstream connections steered back to itself, which connects upstream
 * again, without end. Both sides check: attach against the running proxy's
 * record (src/proxy/record.ts), the proxy at start against the
 * interceptions recorded for its port in its network namespace. A proxy
 * neither side can see (another /run) is stopped by the proxy's own loop
 * guard (src/proxy/server.ts) after one round.
 */
import { AccelError, ErrorCodes } from '../errors.js';
import type { InterceptSettings } from '../intercept/settings.js';
import { readRecord } from '../intercept/record.js';
import { currentNetns } from '../net/iproute.js';
import { listInterceptRecordIds } from '../paths.js';
import { readProxyRecord } from '../proxy/record.js';

const hex = (n: number) => `0x${(n >>> 0).toString(16)}`;

/** attach: refuse a --proxy-mark the proxy on --proxy-port does not use. */
export function checkProxyMark(s: InterceptSettings): void {
  const proxy = readProxyRecord(s.proxyPort);
  if (!proxy || proxy.mark >>> 0 === s.proxyMark >>> 0) return;
  throw new AccelError(
    ErrorCodes.USAGE,
    `the proxy on port ${s.proxyPort} (pid ${proxy.pid}) marks its upstream connections ${hex(proxy.mark)}, not --proxy-mark ${hex(s.proxyMark)}: its own connections would be intercepted again and again; give attach --proxy-mark ${hex(proxy.mark)} or restart the proxy with --mark ${hex(s.proxyMark)}`,
  );
}

/** proxy start: refuse a --mark that an interception steering to `port`
 * in this network namespace does not skip. */
export function checkInterceptionsOf(port: number, mark: number): void {
  const netns = currentNetns();
  for (const id of listInterceptRecordIds()) {
    let record;
    try {
      record = readRecord(id);
    } catch {
      continue;
    }
    if (!record || record.netns !== netns || record.settings.proxyPort !== port || record.settings.proxyMark >>> 0 === mark >>> 0) continue;
    throw new AccelError(
      ErrorCodes.USAGE,
      `the interception of ${record.cgroupPath} steers to port ${port} and skips upstream connections marked ${hex(record.settings.proxyMark)}, not --mark ${hex(mark)}: this proxy's own connections would be intercepted again and again; start it with --mark ${hex(record.settings.proxyMark)} or attach again with --proxy-mark ${hex(mark)}`,
    );
  }
}
