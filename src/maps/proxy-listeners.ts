/**
 * The node's map of accel proxy listeners (bpf/include/accel_proxy_maps.h),
 * pinned at <bpffs>/accel/accel_proxy_listeners: a SOCKHASH from (network
 * namespace cookie, family, port) to the listening socket of the accel proxy
 * serving that port there. Every attachment's lo program hands a new
 * intercepted connection only to the socket it finds here.
 *
 * One map for the node, not one per attachment: a proxy runs on its own,
 * starts before or after the attachments it serves, and may serve several.
 * Whoever needs the map first makes and pins it (a proxy at start, attach
 * --intercept before it loads its programs); the last user removes it: a
 * detach or an exiting proxy, once no attachment's interception is left
 * (its pinned lo program uses the map) and no listener is in it. Making,
 * joining (up to the pinned program) and removing happen under one
 * host-wide lock, so a map about to be removed is never the one another
 * process joins.
 * A proxy that dies needs no cleanup: its sockets close, and a closed
 * socket leaves a SOCKHASH by itself.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ownedDir } from '../bpf/bpffs.js';
import { closeFd, withPinned } from '../bpf/fd.js';
import { keys, lookup, remove, u64, update } from '../bpf/map.js';
import { BPF_ANY } from '../bpf/uapi.js';
import { log } from '../log.js';
import { LO_INGRESS_PIN, PROXY_LISTENERS_MAP, STATE_DIR, attachmentPinDir, listAttachmentIds, pinRoot, pinRootLockPath, proxyListenersPin, proxySocketsPin } from '../paths.js';
import { withLock, withLockAsync } from '../sys/lock.js';
import { PROXY_LISTENERS_MAX, type ProxyKey, ProxyKeyLayout, ProxyListenersMapDef, decodeProxyKey, encodeProxyKey } from './layout/tproxy.js';
import { openOrCreateNodeMap } from './node-map.js';

/** The map as tc_tproxy.c declares it; a pin that differs is refused. */
const DEFINITION = ProxyListenersMapDef;

export class ProxyListeners {
  constructor(readonly fd: number) {}

  /** Hand new connections for `key` to the listening socket `socketFd`
   * (replacing a registration of the same key: only a socket bound to the
   * port could make one, and that is the caller's). */
  register(key: ProxyKey, socketFd: number): void {
    update(this.fd, encodeProxyKey(key), u64(BigInt(socketFd)), BPF_ANY);
  }

  /** Take a registration out (none there: nothing to do). */
  unregister(key: ProxyKey): void {
    remove(this.fd, encodeProxyKey(key));
  }

  /** The cookie of the socket registered under `key`, or null. */
  cookie(key: ProxyKey): bigint | null {
    return lookup(this.fd, encodeProxyKey(key), 8)?.readBigUInt64LE(0) ?? null;
  }

  entries(): { key: ProxyKey; cookie: bigint }[] {
    return keys(this.fd, ProxyKeyLayout.size, PROXY_LISTENERS_MAX).flatMap((k) => {
      const v = lookup(this.fd, k, 8);
      return v ? [{ key: decodeProxyKey(k), cookie: v.readBigUInt64LE(0) }] : [];
    });
  }
}

/** Run `fn` holding the host-wide lock of the node's shared pins. */
export function underPinRootLock<T>(fn: () => T): T {
  ownedDir(STATE_DIR);
  return withLock(pinRootLockPath(), fn);
}

/** underPinRootLock for asynchronous work (ip rules and routes of a
 * namespace, which every interception in it shares). */
export function underPinRootLockAsync<T>(fn: () => Promise<T>): Promise<T> {
  ownedDir(STATE_DIR);
  return withLockAsync(pinRootLockPath(), fn);
}

/** The pinned map's fd, made and pinned first if missing (the pin root
 * too). Call under the lock; the caller closes the fd. */
function openOrCreate(bpffs: string): number {
  return openOrCreateNodeMap(pinRoot(bpffs), proxyListenersPin(bpffs), PROXY_LISTENERS_MAP, DEFINITION, 'map of proxy listeners');
}

/** Make sure the map is pinned, so that a program loaded with it as pin
 * path joins it. Call under the lock. */
export function ensureProxyListeners(bpffs: string): string {
  closeFd(openOrCreate(bpffs));
  return proxyListenersPin(bpffs);
}

/** Run `fn` with the map, made and pinned first if missing, under the lock. */
export function withProxyListeners<T>(bpffs: string, fn: (m: ProxyListeners) => T): T {
  return underPinRootLock(() => {
    const fd = openOrCreate(bpffs);
    try {
      return fn(new ProxyListeners(fd));
    } finally {
      closeFd(fd);
    }
  });
}

/** Run `fn` with the map if it is pinned (lookups: no lock needed); null
 * if it is not. */
export function readProxyListeners<T>(bpffs: string, fn: (m: ProxyListeners) => T): T | null {
  return withPinned(proxyListenersPin(bpffs), (fd) => fn(new ProxyListeners(fd)));
}

/** Does an attachment's interception use the map (its lo program pinned)? */
function interceptionPinned(bpffs: string): boolean {
  return listAttachmentIds(bpffs).some((id) => fs.existsSync(path.join(attachmentPinDir(bpffs, id), LO_INGRESS_PIN)));
}

/**
 * Remove the map once nothing uses it: no interception pinned under the pin
 * root and no listener in it; then the pin root too if it is empty.
 * Returns whether the map was removed. Never throws: it is cleanup.
 */
export function removeUnusedProxyListeners(bpffs: string): boolean {
  try {
    return underPinRootLock(() => {
      const where = proxyListenersPin(bpffs);
      if (interceptionPinned(bpffs)) return false;
      const used = readProxyListeners(bpffs, (m) => m.entries().length > 0);
      if (used !== false) return false; // in use, or not pinned
      fs.rmSync(where, { force: true });
      // The proxies' upstream sockets: the same users, so the same end.
      fs.rmSync(proxySocketsPin(bpffs), { force: true });
      log.verbose(`removed the node's maps of proxy listeners and proxy sockets, ${where}: no attachment and no proxy uses them`);
      try {
        fs.rmdirSync(pinRoot(bpffs));
      } catch {
        /* other pins remain */
      }
      return true;
    });
  } catch (err) {
    log.warn(`cannot remove the map of proxy listeners: ${(err as Error).message}`);
    return false;
  }
}
