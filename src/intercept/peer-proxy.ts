/** A proxy that is not accel's (HAProxy, Envoy: attach --proxy-pid): its
 * listening sockets registered as the proxy of their port, and taken out
 * again when no interception of the namespace steers to that port. */
import { log } from '../log.js';
import { readProxyListeners, withProxyListeners } from '../maps/proxy-listeners.js';
import { listInterceptRecordIds } from '../paths.js';
import { takeListeners } from '../sys/peer-sockets.js';
import { type Family, closeSocket, currentNetnsCookie, netnsCookie } from '../sys/socket.js';
import { type InterceptRecord, readRecord } from './record.js';
import { type InterceptSettings } from './settings.js';

/**
 * Register the listening sockets of a proxy that is not accel's (settings
 * proxyPid) as the proxy of their port in this network namespace. Again on
 * every attach: a restarted proxy has new sockets (a closed socket leaves
 * the map by itself).
 */
export function registerPeerProxy(bpffs: string, s: InterceptSettings): Family[] {
  if (s.proxyPid === null) return [];
  const held = takeListeners(s.proxyPid, s.proxyPort);
  try {
    withProxyListeners(bpffs, (m) => {
      for (const l of held) m.register({ netns: netnsCookie(l.fd), family: l.family, port: s.proxyPort }, l.fd);
    });
  } finally {
    held.forEach((l) => closeSocket(l.fd));
  }
  const families = [...new Set(held.map((l) => l.family))];
  log.info(`registered the listeners of process ${s.proxyPid} on port ${s.proxyPort} (IPv${families.join(', IPv')}) as the proxy`);
  return families;
}

/** Take out the registrations accel made for a proxy that is not accel's,
 * unless another interception in this namespace still steers to its port. */
export function unregisterPeerProxy(bpffs: string, record: InterceptRecord): void {
  const s = record.settings;
  if (s.proxyPid === null || s.proxyPid === undefined) return;
  const others = listInterceptRecordIds()
    .filter((id) => String(id) !== record.cgroupId)
    .map((id) => {
      try {
        return readRecord(id);
      } catch {
        return null; // unreadable: it cannot say it uses the port
      }
    });
  if (others.some((o) => o && o.netns === record.netns && o.settings.proxyPort === s.proxyPort)) return;
  const netns = currentNetnsCookie();
  readProxyListeners(bpffs, (m) => ([4, 6] as const).forEach((family) => m.unregister({ netns, family, port: s.proxyPort })));
}
