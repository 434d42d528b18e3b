/**
 * The node's map of the proxies' own upstream sockets
 * (bpf/include/accel_proxy_maps.h), pinned at
 * <bpffs>/accel/accel_proxy_sockets: socket storage on which a proxy puts
 * an entry for each upstream socket before it connects. The interception's
 * egress programs never steer or refuse such a socket's SYN; a mark is not
 * enough, since any process with CAP_NET_RAW can set SO_MARK.
 *
 * Socket storage needs BTF for its value, so the map is made by loading
 * proxy_sockets.bpf.o (maps only) with its pin path, under the lock of the
 * pin root, like the map of proxy listeners beside it; it is removed with
 * that map (removeUnusedProxyListeners). An entry goes with its socket.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ownedDir } from '../bpf/bpffs.js';
import { closeFd } from '../bpf/fd.js';
import { update, u64 } from '../bpf/map.js';
import { BpfObject } from '../bpf/object.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { PROXY_LISTENERS_MAP, PROXY_SOCKETS_MAP, pinRoot, proxySocketsPin } from '../paths.js';
import { ProxySocketsMapDef } from './layout/tproxy.js';
import { openNodeMap } from './node-map.js';
import { ensureProxyListeners, underPinRootLock } from './proxy-listeners.js';

/** Make sure both node maps are pinned (call under the pin root lock);
 * returns their pin paths, for an object that includes accel_proxy_maps.h. */
export function ensureProxyMaps(bpffs: string, bpfDir: string): Record<string, string> {
  const paths = { [PROXY_LISTENERS_MAP]: ensureProxyListeners(bpffs), [PROXY_SOCKETS_MAP]: proxySocketsPin(bpffs) };
  if (!fs.existsSync(proxySocketsPin(bpffs))) {
    ownedDir(pinRoot(bpffs));
    BpfObject.load(path.join(bpfDir, 'proxy_sockets.bpf.o'), { pinRoot: pinRoot(bpffs), pinPaths: paths }).close();
  }
  return paths;
}

/** The proxy's handle on the map: it records each upstream socket it makes. */
export class ProxySockets {
  private constructor(private readonly fd: number) {}

  /** Open the map, made first if missing; E_BPF_MAP if a pin there is not
   * accel's. The caller closes it. */
  static open(bpffs: string, bpfDir: string): ProxySockets {
    return underPinRootLock(() => {
      ensureProxyMaps(bpffs, bpfDir);
      const where = proxySocketsPin(bpffs);
      const fd = openNodeMap(where, ProxySocketsMapDef, 'map of proxy sockets');
      if (fd === null) throw new AccelError(ErrorCodes.BPF_MAP, `the map of proxy sockets is not pinned at ${where}`);
      return new ProxySockets(fd);
    });
  }

  /** Mark socket `socketFd` (of this process) as a proxy's upstream socket. */
  record(socketFd: number): void {
    const key = Buffer.alloc(4);
    key.writeInt32LE(socketFd);
    update(this.fd, key, u64(BigInt(process.pid)));
  }

  close(): void {
    closeFd(this.fd);
  }
}
