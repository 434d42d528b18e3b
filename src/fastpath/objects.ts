/**
 * The fast path's BPF objects and how they are loaded: sockops.bpf.o first
 * (it creates every map), then skmsg.bpf.o and, when the readiness
 * stream verdict is wanted, stream_verdict.bpf.o, both on the same maps. The
 * programs are attached to the SOCKHASH here; attaching sockops to a cgroup
 * is the caller's last step (it makes the fast path live).
 */
import path from 'node:path';
import { attachToMap } from '../bpf/attach.js';
import { BpfObject, type LoadOptions } from '../bpf/object.js';
import { AttachType } from '../bpf/uapi.js';
import { FastPathMaps, MapNames } from '../maps/fastpath.js';

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
}

/** The size of accel_sock_hash in bpf/include/accel.h. */
export const DEFAULT_MAX_SOCKETS = 65536;

/** About what plain TCP lets a writer queue for a peer that does not read
 * (its send buffer, net.ipv4.tcp_wmem's max of 4 MiB by default). */
export const DEFAULT_QUEUE_LIMIT = 4 << 20;

export interface LoadedFastPath {
  sockops: BpfObject;
  skmsg: BpfObject;
  streamVerdict: BpfObject | null;
  maps: FastPathMaps;
  /** Every named map of the attachment by name. */
  mapFds: Record<string, number>;
  close(): void;
}

export function loadFastPath(bpfDir: string, settings: FastPathSettings): LoadedFastPath {
  const opened: BpfObject[] = [];
  const load = (file: string, options: LoadOptions) => {
    const obj = BpfObject.load(path.join(bpfDir, file), options);
    opened.push(obj);
    return obj;
  };
  try {
    const n = settings.maxSockets;
    const sockops = load('sockops.bpf.o', n ? { maxEntries: { [MapNames.sockHash]: n, [MapNames.members]: n } } : {});
    const mapFds = sockops.maps();
    const skmsg = load('skmsg.bpf.o', { reuseMaps: mapFds });
    Object.assign(mapFds, skmsg.maps());
    const streamVerdict = settings.withStreamVerdict ? load('stream_verdict.bpf.o', { reuseMaps: mapFds }) : null;
    const fd = (name: string) => mapFds[name] ?? -1;
    const maps = new FastPathMaps({
      sockHash: fd(MapNames.sockHash),
      counters: fd(MapNames.counters),
      config: fd(MapNames.config),
      bypass: fd(MapNames.bypass),
      members: fd(MapNames.members),
      listeners: fd(MapNames.listeners),
    });
    maps.setBypassPorts(settings.bypassPorts);
    maps.setConfig({ redirectEnabled: true, queueLimit: settings.queueLimit });
    attachToMap(skmsg.programFd(Programs.skmsg), maps.fds.sockHash, AttachType.SK_MSG_VERDICT);
    if (streamVerdict) attachToMap(streamVerdict.programFd(Programs.streamVerdict), maps.fds.sockHash, AttachType.SK_SKB_STREAM_VERDICT);
    return { sockops, skmsg, streamVerdict, maps, mapFds, close: () => opened.forEach((o) => o.close()) };
  } catch (err) {
    opened.forEach((o) => o.close());
    throw err;
  }
}
