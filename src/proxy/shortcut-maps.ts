/**
 * Finding out whether an allowed connection of accel proxy can take the
 * shortcut (bpf/include/accel_shortcut.h), and writing its two entries in
 * accel_shortcuts. It can when the client's socket, the proxy's two sockets
 * and the server's socket are all on the fast path of one attachment
 * (accel_members): then the client and the server are local, each has the
 * fast path's sk_msg program, and each can be redirected to. The proxy's
 * two sockets are made to send by TCP only first, so the kernel counts
 * what the proxy relays (the shortcut waits for those counts).
 */
import fs from 'node:fs';
import path from 'node:path';
import type net from 'node:net';
import { closeFd, openPinned } from '../bpf/fd.js';
import { lookup, remove, update } from '../bpf/map.js';
import { BPF_NOEXIST } from '../bpf/uapi.js';
import { MapNames } from '../maps/fastpath.js';
import { MemberLayout, type Shortcut, encodeShortcut, tcpOnlySockState } from '../maps/layout/fastpath.js';
import { encodeSockKey } from '../maps/layout/shared.js';
import { attachmentPinDir, listAttachmentIds } from '../paths.js';
import { nodeSocketFd } from '../sys/node-internals.js';
import { netnsCookie } from '../sys/socket.js';

const unmapped = (a: string) => a.replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, '$1');

/** A socket's own key and its peer's (the reversed key). */
function keysOf(sock: net.Socket, netns: bigint): { own: Buffer; peer: Buffer } | null {
  const local = unmapped(sock.localAddress ?? '');
  const remote = unmapped(sock.remoteAddress ?? '');
  if (!local || !remote || !sock.localPort || !sock.remotePort) return null;
  const family = local.includes(':') ? ('ipv6' as const) : ('ipv4' as const);
  const end = (a: string, p: number) => ({ address: a, port: p });
  const me = end(local, sock.localPort);
  const it = end(remote, sock.remotePort);
  const key = (l: typeof me, r: typeof me) => encodeSockKey({ netns, family, localAddress: l.address, localPort: l.port, remoteAddress: r.address, remotePort: r.port });
  return { own: key(me, it), peer: key(it, me) };
}

/** One direction of a shortcut: the sender's key and what it is given. */
export interface ShortcutEntry {
  key: Buffer;
  value: Shortcut;
}

/** The pinned maps of one attachment, shared by the connections using it. */
interface Opened {
  members: number;
  shortcuts: number;
  sockState: number;
  users: number;
}

export class ShortcutMaps {
  private readonly opened = new Map<string, Opened>();

  constructor(private readonly bpffs: string) {}

  /**
   * The two entries of a shortcut between the client of `client` (the
   * proxy's accepted socket) and the server of `upstream` (the proxy's
   * connected socket), and the attachment whose maps hold them; null when
   * the four sockets are not all on one attachment's fast path.
   */
  plan(client: net.Socket, upstream: net.Socket): ShortcutPlan | null {
    if (!fs.existsSync(this.bpffs)) return null;
    const fd = nodeSocketFd(client);
    const upstreamFd = nodeSocketFd(upstream);
    if (fd === null || upstreamFd === null) return null;
    const netns = netnsCookie(fd);
    const c = keysOf(client, netns);
    const u = keysOf(upstream, netns);
    if (!c || !u) return null;
    for (const id of listAttachmentIds(this.bpffs)) {
      const dir = attachmentPinDir(this.bpffs, id);
      const o = this.open(dir);
      if (!o) continue;
      const member = (key: Buffer) => lookup(o.members, key, MemberLayout.size);
      const app = member(c.peer);
      const proxyApp = member(c.own);
      const proxyServer = member(u.own);
      const server = member(u.peer);
      if (app && proxyApp && proxyServer && server) {
        return new ShortcutPlan(
          this,
          dir,
          [
            { key: c.peer, value: { dest: u.peer, destSock: server, relaySock: proxyServer } },
            { key: u.peer, value: { dest: c.peer, destSock: app, relaySock: proxyApp } },
          ],
          [fd, upstreamFd],
        );
      }
      this.release(dir);
    }
    return null;
  }

  private open(dir: string): Opened | null {
    let o = this.opened.get(dir);
    if (!o) {
      const fds = [MapNames.members, MapNames.shortcuts, MapNames.sockState].map((name) => openPinned(path.join(dir, name)));
      const [members, shortcuts, sockState] = fds;
      if (members == null || shortcuts == null || sockState == null) {
        for (const fd of fds) if (fd !== null) closeFd(fd);
        return null;
      }
      o = { members, shortcuts, sockState, users: 0 };
      this.opened.set(dir, o);
    }
    o.users++;
    return o;
  }

  /** @internal */
  release(dir: string): void {
    const o = this.opened.get(dir);
    if (!o || --o.users > 0) return;
    this.opened.delete(dir);
    closeFd(o.members);
    closeFd(o.shortcuts);
    closeFd(o.sockState);
  }

  /** @internal */
  fds(dir: string): Opened {
    const o = this.opened.get(dir);
    if (!o) throw new Error(`shortcut maps of ${dir} are not open`);
    return o;
  }
}

/** The shortcut of one connection, from its making to its end. */
export class ShortcutPlan {
  private ended = false;

  constructor(
    private readonly maps: ShortcutMaps,
    private readonly dir: string,
    /** Client to server, then server to client. */
    readonly entries: [ShortcutEntry, ShortcutEntry],
    /** The proxy's accepted and upstream sockets. */
    private readonly relays: [number, number],
  ) {}

  /** Make the proxy's two sockets send by TCP only, then put both entries
   * in the map: from now on each side takes the shortcut as soon as what
   * it sent before has gone through the proxy. Before the proxy writes a
   * byte into either socket: an sk_msg redirect would pass the kernel's
   * count (write_seq), and the shortcut would never be taken. */
  install(): void {
    const o = this.maps.fds(this.dir);
    const state = tcpOnlySockState();
    for (const fd of this.relays) {
      const key = Buffer.alloc(4);
      key.writeInt32LE(fd);
      // The socket has sent nothing, so it has no state yet (skmsg.c makes
      // it at a first send held back or passed): one that has is left as
      // it is, and the connection relayed.
      update(o.sockState, key, state, BPF_NOEXIST);
    }
    update(o.shortcuts, this.entries[0].key, encodeShortcut(this.entries[0].value), BPF_NOEXIST);
    try {
      update(o.shortcuts, this.entries[1].key, encodeShortcut(this.entries[1].value), BPF_NOEXIST);
    } catch (err) {
      remove(o.shortcuts, this.entries[0].key);
      throw err;
    }
  }

  /** Take both entries out (if still there) and let go of the maps. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    const fd = this.maps.fds(this.dir).shortcuts;
    for (const e of this.entries) remove(fd, e.key);
    this.maps.release(this.dir);
  }

  /** Not installed after all: let go of the maps. */
  abandon(): void {
    if (this.ended) return;
    this.ended = true;
    this.maps.release(this.dir);
  }
}
