/** Where accel finds its build products and where it pins. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (this file is dist/src/paths.js once compiled). */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export const DEFAULT_BPF_DIR = process.env.ACCEL_BPF_DIR ?? path.join(PACKAGE_ROOT, 'build', 'bpf');
export const SOCKPROBE = process.env.ACCEL_SOCKPROBE ?? path.join(PACKAGE_ROOT, 'build', 'sockprobe');
/** The bench's connection-rate client and server (native/connrate.c). */
export const CONNRATE = process.env.ACCEL_CONNRATE ?? path.join(PACKAGE_ROOT, 'build', 'connrate');
/** The same load over an AF_UNIX pair and over TCP (native/ipcpair.c). */
export const IPCPAIR = process.env.ACCEL_IPCPAIR ?? path.join(PACKAGE_ROOT, 'build', 'ipcpair');
/** This command line's entry point, for running accel in another place. */
export const CLI_ENTRY = path.join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
export const DEFAULT_BPFFS = '/sys/fs/bpf';
/** Every attachment pins below <bpffs>/accel. */
export const PIN_SUBDIR = 'accel';
/** Interception records, attachment journals and self-test records (not
 * bpffs: it holds no regular files). */
export const STATE_DIR = process.env.ACCEL_STATE_DIR ?? '/run/accel';

/** <bpffs>/accel: the pin root, owned by accel. */
export function pinRoot(bpffs: string): string {
  return path.join(bpffs, PIN_SUBDIR);
}

/** The pin directory of one cgroup's attachment: every map by name, the
 * programs, and the links. */
export function attachmentPinDir(bpffs: string, cgroupId: bigint): string {
  return path.join(pinRoot(bpffs), `cgroup-${cgroupId}`);
}

/** The node's one map of proxy listeners (bpf/include/accel_proxy_maps.h):
 * pinned in the pin root itself, shared by every attachment and proxy. */
export const PROXY_LISTENERS_MAP = 'accel_proxy_listeners';

export function proxyListenersPin(bpffs: string): string {
  return path.join(pinRoot(bpffs), PROXY_LISTENERS_MAP);
}

/** The node's set of attached cgroups (bpf/include/accel_owners.h): which
 * attachment owns a socket when attachments are nested. */
export const OWNERS_MAP = 'accel_owners';

export function ownersPin(bpffs: string): string {
  return path.join(pinRoot(bpffs), OWNERS_MAP);
}

/** The node's map of the proxies' upstream sockets (socket storage),
 * beside the map of proxy listeners and made and removed with it. */
export const PROXY_SOCKETS_MAP = 'accel_proxy_sockets';

export function proxySocketsPin(bpffs: string): string {
  return path.join(pinRoot(bpffs), PROXY_SOCKETS_MAP);
}

/** The pin of an interception's lo program in its attachment directory:
 * while one is there, that program uses the map of proxy listeners. */
export const LO_INGRESS_PIN = 'prog_tc_lo_ingress';

/** Held while that map is made, joined or removed (src/sys/lock.ts). */
export function pinRootLockPath(): string {
  return path.join(STATE_DIR, 'pin-root.lock');
}

/** Cgroup ids of every attachment directory under the pin root. */
export function listAttachmentIds(bpffs: string): bigint[] {
  const root = pinRoot(bpffs);
  if (!fs.existsSync(root)) return [];
  return fs
    .readdirSync(root)
    .map((name) => /^cgroup-(\d+)$/.exec(name)?.[1])
    .filter((id): id is string => id !== undefined)
    .map((id) => BigInt(id));
}

/** The record of what interception added for one cgroup. */
export function interceptRecordPath(cgroupId: bigint): string {
  return path.join(STATE_DIR, `intercept-cgroup-${cgroupId}.json`);
}

/** What the self-test found when one cgroup's fast path was installed
 * (reader kinds unsafe on this kernel), or that it did not run. */
export function selftestRecordPath(cgroupId: bigint): string {
  return path.join(STATE_DIR, `cgroup-${cgroupId}.selftest.json`);
}

/** Which build of the fast path's programs one cgroup's attachment runs
 * (src/fastpath/build.ts): what tells adopting it from upgrading it. */
export function fastPathBuildRecordPath(cgroupId: bigint): string {
  return path.join(STATE_DIR, `cgroup-${cgroupId}.build.json`);
}

/** Cgroup ids of every interception record. */
export function listInterceptRecordIds(): bigint[] {
  if (!fs.existsSync(STATE_DIR)) return [];
  return fs
    .readdirSync(STATE_DIR)
    .map((name) => /^intercept-cgroup-(\d+)\.json$/.exec(name)?.[1])
    .filter((id): id is string => id !== undefined)
    .map((id) => BigInt(id));
}

/** What a running proxy tells attach about itself: one file per network
 * namespace (by inode) and port. */
export function proxyRecordPath(netns: number, port: number): string {
  return path.join(STATE_DIR, `proxy-netns-${netns}-port-${port}.json`);
}

/** The journal of the operation under way on one cgroup's attachment. */
export function journalPath(cgroupId: bigint): string {
  return path.join(STATE_DIR, `cgroup-${cgroupId}.journal.json`);
}
