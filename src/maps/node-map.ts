/**
 * Node-wide maps: one map for the whole node, pinned directly in the pin
 * root (<bpffs>/accel/), shared by every attachment and process of accel
 * (the proxy listeners, the proxies' sockets, the attached cgroups). Each
 * is opened, or made and pinned first, under the pin root's lock, and a
 * pin that is not what this version declares is refused, never reused.
 */
import { ownedDir } from '../bpf/bpffs.js';
import { closeFd, mapInfo, openPinned, pin } from '../bpf/fd.js';
import { createMap } from '../bpf/map.js';
import { AccelError, ErrorCodes, isAccelError } from '../errors.js';
import { log } from '../log.js';

export interface NodeMapDefinition {
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
}

const FIELDS = ['type', 'keySize', 'valueSize', 'maxEntries', 'flags'] as const;

/** E_BPF_MAP, naming each field that differs, unless the map behind `fd`
 * (pinned at `where`) is `def`; `what` names the map in the message. */
export function checkNodeMap(fd: number, where: string, def: NodeMapDefinition, what: string): void {
  const info = mapInfo(fd);
  const differ = FIELDS.filter((k) => info[k] !== def[k]);
  if (differ.length) {
    throw new AccelError(
      ErrorCodes.BPF_MAP,
      `the map pinned at ${where} is not accel's ${what}: ${differ.map((k) => `${k} ${info[k]}, not ${def[k]}`).join('; ')} (pinned by another version of accel?)`,
    );
  }
}

/** The pinned map's fd, checked (closed again if it is not `def`); null
 * when nothing is pinned at `where`. */
export function openNodeMap(where: string, def: NodeMapDefinition, what: string): number | null {
  const fd = openPinned(where);
  if (fd === null) return null;
  try {
    checkNodeMap(fd, where, def, what);
  } catch (err) {
    closeFd(fd);
    throw err;
  }
  return fd;
}

/** The pinned map's fd, made and pinned at `where` (in the pin root
 * `root`) first if missing. Call under the pin root's lock; the caller
 * closes the fd. */
export function openOrCreateNodeMap(root: string, where: string, name: string, def: NodeMapDefinition, what: string): number {
  ownedDir(root);
  const there = openNodeMap(where, def, what);
  if (there !== null) return there;
  const fd = createMap(def.type, name, def.keySize, def.valueSize, def.maxEntries);
  try {
    pin(fd, where);
    log.verbose(`made the node's ${what}, ${where}`);
  } catch (err) {
    closeFd(fd);
    // Someone without the lock (an older accel) pinned one meanwhile.
    if (!isAccelError(err) || err.errno !== 'EEXIST') throw err;
    const theirs = openNodeMap(where, def, what);
    if (theirs === null) throw err;
    return theirs;
  }
  return fd;
}
