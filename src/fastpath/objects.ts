/**
 * The fast path's BPF objects and how they are loaded: sockops.bpf.o first
 * (it makes every map), then skmsg.bpf.o and, when the readiness stream
 * verdict is wanted, stream_verdict.bpf.o, both on the same maps. With a
 * pin directory the maps are pinned there by name as the objects load
 * (LIBBPF_PIN_BY_NAME in bpf/include/accel_maps.h) and the later objects
 * use the pinned ones; without one (the self-test) nothing is pinned and
 * the later objects are given the first one's map fds. The programs are
 * attached to the SOCKHASH here; pinning them, and attaching sockops to a
 * cgroup, is the caller's (the cgroup link makes the fast path live).
 */
import path from 'node:path';
import { attachToMap } from '../bpf/attach.js';
import { BpfObject, type LoadOptions } from '../bpf/object.js';
import { AttachType } from '../bpf/uapi.js';
import { FastPathMaps, MapNames } from '../maps/fastpath.js';
import { OWNERS_MAP } from '../paths.js';

export const Programs = {
  sockops: 'accel_sockops',
  skmsg: 'accel_skmsg',
  streamVerdict: 'accel_stream_verdict',
} as const;

export interface FastPathSettings {
  /** Attach the stream verdict (stream_verdict.c). */
  withStreamVerdict: boolean;
  bypassPorts: number[];
  /** Bytes a fast-path socket may hold unread before its writer is held
   * back (bpf/include/accel_backpressure.h). */
  queueLimit: number;
  /** Sockets the SOCKHASH (and the member set) may hold; a connection
   * whose sockets do not fit keeps the normal path. */
  maxSockets?: number;
  /** The cgroup it is for (nested attachments: a socket of a cgroup
   * below a deeper attachment is left to that one); 0: every socket. */
  cgroupId?: bigint;
}

/** The size of accel_sock_hash in bpf/include/accel.h. */
export const DEFAULT_MAX_SOCKETS = 65536;

/** About what plain TCP lets a writer queue for a peer that does not read
 * (its send buffer, net.ipv4.tcp_wmem's max of 4 MiB by default). */
export const DEFAULT_QUEUE_LIMIT = 4 << 20;

export interface FastPathLoadOptions extends FastPathSettings {
  /** bpffs directory, made beforehand (makePinDir), that every map is
   * pinned in by name, or used from if pinned there already: a caller that
   * wants new maps removes what an earlier attempt left there first.
   * Without it no map is pinned. */
  pinDir?: string;
  /** With pinDir: where the node's set of attached cgroups is pinned
   * (src/maps/owners.ts). */
  ownersPin?: string;
  /** Without pinDir: that map's fd, to share it unpinned (the self-test). */
  ownersFd?: number;
}

export interface LoadedFastPath {
  sockops: BpfObject;
  skmsg: BpfObject;
  streamVerdict: BpfObject | null;
  maps: FastPathMaps;
  close(): void;
}

/** Load the objects on their maps, and set the settings: the maps' first
 * values (a fresh pin directory) or, for pins made before, the new ones. */
export function loadFastPath(bpfDir: string, options: FastPathLoadOptions): LoadedFastPath {
  const loaded = loadFastPathObjects(bpfDir, options);
  try {
    loaded.maps.setBypassPorts(options.bypassPorts);
    loaded.maps.setConfig({ redirectEnabled: true, queueLimit: options.queueLimit, cgroupId: options.cgroupId ?? 0n });
    attachFastPathToMap(loaded);
    return loaded;
  } catch (err) {
    loaded.close();
    throw err;
  }
}

/** Attach the loaded sk_msg (and stream verdict) programs to the SOCKHASH:
 * programs attached there before are replaced (src/bpf/attach.ts). */
export function attachFastPathToMap(loaded: LoadedFastPath): void {
  attachToMap(loaded.skmsg.programFd(Programs.skmsg), loaded.maps.fds.sockHash, AttachType.SK_MSG_VERDICT);
  if (loaded.streamVerdict) attachToMap(loaded.streamVerdict.programFd(Programs.streamVerdict), loaded.maps.fds.sockHash, AttachType.SK_SKB_STREAM_VERDICT);
}

/** Load the objects on their maps (pinned ones kept as they are, with
 * their values: an upgrade), attaching and writing nothing. */
export function loadFastPathObjects(bpfDir: string, options: Omit<FastPathLoadOptions, 'bypassPorts' | 'queueLimit'>): LoadedFastPath {
  const opened: BpfObject[] = [];
  const load = (file: string, loadOptions: LoadOptions) => {
    const obj = BpfObject.load(path.join(bpfDir, file), loadOptions);
    opened.push(obj);
    return obj;
  };
  try {
    const n = options.maxSockets;
    const sized: LoadOptions = n ? { maxEntries: { [MapNames.sockHash]: n, [MapNames.members]: n, [MapNames.upstreams]: n } } : {};
    const { pinDir } = options;
    const owners = { [OWNERS_MAP]: options.ownersPin };
    const sockops = load(
      'sockops.bpf.o',
      pinDir
        ? { ...sized, pinRoot: pinDir, ...(options.ownersPin ? { pinPaths: owners as Record<string, string> } : {}) }
        : { ...sized, ...(options.ownersFd !== undefined ? { reuseMaps: { [OWNERS_MAP]: options.ownersFd } } : {}) },
    );
    // Pinned: each object sized alike, so that it fits the pins. Unpinned:
    // the maps given by fd bring their size.
    const next: LoadOptions = pinDir ? { ...sized, pinRoot: pinDir, pinnedOnly: true } : { reuseMaps: sockops.maps() };
    const skmsg = load('skmsg.bpf.o', next);
    const streamVerdict = options.withStreamVerdict ? load('stream_verdict.bpf.o', next) : null;
    const fd = (name: string) => sockops.mapFd(name);
    const maps = new FastPathMaps({
      sockHash: fd(MapNames.sockHash),
      counters: fd(MapNames.counters),
      config: fd(MapNames.config),
      bypass: fd(MapNames.bypass),
      members: fd(MapNames.members),
      listeners: fd(MapNames.listeners),
      shortcuts: fd(MapNames.shortcuts),
    });
    return { sockops, skmsg, streamVerdict, maps, close: () => opened.forEach((o) => o.close()) };
  } catch (err) {
    opened.forEach((o) => o.close());
    throw err;
  }
}
