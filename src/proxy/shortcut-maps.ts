/**
 * Finding out whether an allowed connection of accel proxy can take the
 * shortcut (bpf/include/accel_shortcut.h), and writing its entries in
 * accel_shortcuts. Two kinds:
 * - local: the client's socket, the proxy's two sockets and the server's
 *   socket are all on the fast path of one attachment (accel_members): the
 *   client and the server are local, each has the fast path's sk_msg
 *   program, and each can be redirected to. Two entries, one per way. The
 *   proxy's two sockets are made to send by TCP only first, so the kernel
 *   counts what the proxy relays (the shortcut waits for those counts).
 * - egress: the client and the proxy's accepted socket are on the fast
 *   path, and the proxy's upstream socket connects to another host
 *   (sockops.c recorded it in accel_upstreams). One entry: the client's
 *   bytes are sent on the upstream socket, which the proxy puts in
 *   accel_sock_hash (made to send by TCP only first, as a relay). The
 *   server's answers come back through the proxy, which writes them into
 *   its accepted socket, and the fast path carries them to the client.
 *
 * Not every attachment may have one (the refusal given, from what its
 * self-test found: attachment/selftest-record.ts, shortcutRefusal): the
 * hand-off delivers what the proxy relays by TCP, and compares sequence
 * numbers.
 */
import fs from 'node:fs';
import path from 'node:path';
import type net from 'node:net';
import { closeFd, mapInfo, openPinned } from '../bpf/fd.js';
import { lookup, remove, update } from '../bpf/map.js';
import { BPF_NOEXIST } from '../bpf/uapi.js';
import { log } from '../log.js';
import { MapNames } from '../maps/fastpath.js';
import { MemberLayout, type Shortcut, ShortcutLayout, encodeShortcut, shortcutSent, tcpOnlySockState } from '../maps/layout/fastpath.js';
import { reversedSockKey, sockKeyOf } from '../maps/layout/shared.js';
import { attachmentPinDir, listAttachmentIds } from '../paths.js';
import { nodeSocketFd } from '../sys/node-internals.js';
import { lingerOff, netnsCookie, resetOnClose } from '../sys/socket.js';

/** accel proxy --shortcut: auto (where the attachment's self-test found it
 * safe for every reader), always (also where FIONREAD-sized readers are
 * not), never. */
export type ShortcutMode = 'auto' | 'always' | 'never';
export const SHORTCUT_MODES: readonly ShortcutMode[] = ['auto', 'always', 'never'];

/** local: client and server on this host; egress: the server elsewhere. */
export type ShortcutKind = 'local' | 'egress';

/** How long what an attachment's self-test record says is taken as known. */
const RECORD_TTL_MS = 2000;

/** The inode of an attachment's members pin, or null: none there. */
function pinnedIno(dir: string): number | null {
  try {
    return fs.statSync(path.join(dir, MapNames.members)).ino;
  } catch {
    return null;
  }
}

/** A socket's own key and its peer's (the reversed key). */
function keysOf(sock: net.Socket, netns: bigint): { own: Buffer; peer: Buffer } | null {
  const { localAddress, localPort, remoteAddress, remotePort } = sock;
  if (!localAddress || !remoteAddress || !localPort || !remotePort) return null;
  const own = sockKeyOf(netns, { localAddress, localPort, remoteAddress, remotePort });
  // Swapped, not built again: the addresses are parsed once per socket.
  return { own, peer: reversedSockKey(own) };
}

/** One direction of a shortcut: the sender's key and what it is given. */
export interface ShortcutEntry {
  key: Buffer;
  value: Shortcut;
}

/** The pinned maps of one attachment, shared by the connections using it. */
interface Opened {
  dir: string;
  /** The members pin's inode: another one means another attachment under
   * the same directory (detached and attached again, or upgraded). */
  ino: number;
  members: number;
  shortcuts: number;
  sockState: number;
  sockHash: number;
  /** null: pinned by a build before the egress shortcut (none then). */
  upstreams: number | null;
  /** Its accel_shortcuts holds entries of another layout (pinned by
   * another build of accel): it gets no shortcut, said once. */
  misfit: boolean;
  users: number;
}

export class ShortcutMaps {
  private readonly opened = new Map<string, Opened>();
  /** Per cgroup id and kind: why it gets no such shortcut (null: it may),
   * and until when that is taken as known. */
  private readonly refusals = new Map<string, { id: bigint; why: string | null; until: number }>();
  private ids: { list: bigint[]; until: number } | null = null;
  private closed = false;
  /** See netnsOf. */
  private netns: bigint | null = null;

  constructor(
    private readonly bpffs: string,
    /** Why the connections of this attachment (cgroup id) get no shortcut
     * of this kind, or null: they may. */
    private readonly refusal: (cgroupId: bigint, kind: ShortcutKind) => string | null,
  ) {}

  /**
   * The entries of a shortcut between the client of `client` (the proxy's
   * accepted socket) and the server of `upstream` (the proxy's connected
   * socket), and the attachment whose maps hold them; null when the
   * sockets are not on one attachment's fast path as either kind needs,
   * or that attachment gets no shortcut of that kind.
   */
  plan(client: net.Socket, upstream: net.Socket): ShortcutPlan | null {
    if (this.closed) return null;
    const fd = nodeSocketFd(client);
    const upstreamFd = nodeSocketFd(upstream);
    if (fd === null || upstreamFd === null) return null;
    const netns = this.netnsOf(upstreamFd);
    const c = keysOf(client, netns);
    const u = keysOf(upstream, netns);
    if (!c || !u) return null;
    for (const id of this.attachmentIds()) {
      const o = this.open(attachmentPinDir(this.bpffs, id));
      if (!o) continue;
      let plan: ShortcutPlan | null = null;
      try {
        if (o.misfit) continue;
        const member = (key: Buffer) => lookup(o.members, key, MemberLayout.size);
        // The proxy's upstream socket first: a connection of another
        // attachment (or none) pays these lookups per attachment. A member
        // when the server is local, else (another host) an upstream record.
        const proxyServer = member(u.own);
        const upstream = proxyServer ? null : o.upstreams !== null ? lookup(o.upstreams, u.own, MemberLayout.size) : null;
        const server = proxyServer && member(u.peer);
        const app = (proxyServer ?? upstream) && member(c.peer);
        const proxyApp = app && member(c.own);
        if (app && proxyApp) {
          if (proxyServer && server && this.allowed(id, 'local')) {
            plan = new ShortcutPlan(this, o, {
              kind: 'local',
              entries: [
                { key: c.peer, value: { dest: u.peer, destSock: server, relaySock: proxyServer } },
                { key: u.peer, value: { dest: c.peer, destSock: app, relaySock: proxyApp } },
              ],
              relays: [fd, upstreamFd],
              tcpOnly: [fd, upstreamFd],
              intoMap: null,
            });
          } else if (upstream && this.allowed(id, 'egress')) {
            plan = new ShortcutPlan(this, o, {
              kind: 'egress',
              entries: [{ key: c.peer, value: { dest: u.own, destSock: upstream, relaySock: upstream } }],
              relays: [fd, upstreamFd],
              // The accepted socket keeps the fast path to the client: the
              // server's answers take it.
              tcpOnly: [upstreamFd],
              intoMap: { key: u.own, fd: upstreamFd },
            });
          }
        }
      } finally {
        if (!plan) this.release(o);
      }
      if (plan) return plan;
    }
    return null;
  }

  /** The network namespace of the proxy's sockets, read once (a getsockopt
   * per connection showed in the connection rate): a socket is made in its
   * maker's namespace, the proxy makes its upstream sockets and its
   * listeners (or its parent does, --workers, in the same namespace), and
   * never moves to another. The keys of both sockets of a connection are
   * in this one namespace. */
  private netnsOf(fd: number): bigint {
    this.netns ??= netnsCookie(fd);
    return this.netns;
  }

  /** May this attachment's connections have shortcuts of this kind? Said
   * once per attachment and kind while the answer stays. Asked only of
   * the attachment whose maps hold the connection's sockets: it is looked
   * in first for the next connection (each attachment looked in before it
   * costs map lookups per connection, and a node may have many). */
  private allowed(id: bigint, kind: ShortcutKind): boolean {
    this.lookFirst(id);
    const now = Date.now();
    const at = `${id}/${kind}`;
    const known = this.refusals.get(at);
    if (known && known.until > now) return known.why === null;
    const why = this.refusal(id, kind);
    if (why !== null && known?.why !== why) log.warn(`no shortcut for the connections of cgroup ${id} (${kind}): ${why}`);
    this.refusals.set(at, { id, why, until: now + RECORD_TTL_MS });
    return why === null;
  }

  /** Put `id` first in the attachment list (in place, until the list is
   * read again; plan() may be going through it: the entries after `id`
   * keep their places). */
  private lookFirst(id: bigint): void {
    const list = this.ids?.list;
    if (!list || list[0] === id) return;
    const i = list.indexOf(id);
    if (i > 0) list.unshift(...list.splice(i, 1));
  }

  /** The attachments, read again at most once a second (a new one gets
   * shortcuts that much later, and the maps of one attached again are
   * taken up that much later: see open()). */
  private attachmentIds(): bigint[] {
    const now = Date.now();
    if (!this.ids || this.ids.until <= now) {
      const list = listAttachmentIds(this.bpffs);
      this.ids = { list, until: now + 1000 };
      // Detached ones, and ones attached again (another members pin): their
      // maps are let go.
      const dirs = new Set(list.map((id) => attachmentPinDir(this.bpffs, id)));
      for (const [dir, o] of this.opened) {
        if (dirs.has(dir) && pinnedIno(dir) === o.ino) continue;
        this.opened.delete(dir);
        this.unused(o);
      }
      for (const [at, r] of this.refusals) if (!list.includes(r.id)) this.refusals.delete(at);
    }
    return this.ids.list;
  }

  /**
   * The maps of the attachment in `dir`, opened at its first connection and
   * kept. Whether they are still the pinned ones is checked with the
   * attachment list, once a second, not per connection (a stat per
   * connection and attachment showed in the connection rate): for up to a
   * second after an attachment is detached or attached again, a plan may
   * look in its old maps. Harmless: sockets that connect after the detach
   * are not in them (no plan); and should stale entries match, the
   * client's socket (and a local server's) is not in the old SOCKHASH,
   * whose programs alone read those maps: the connection is relayed by the
   * proxy, every byte. (Checking per connection only narrowed that window,
   * never closed it.)
   */
  private open(dir: string): Opened | null {
    let o = this.opened.get(dir);
    if (!o) {
      const ino = pinnedIno(dir);
      // Gone (detached): so are its maps, for this process too.
      if (ino === null) return null;
      const fds = [MapNames.members, MapNames.shortcuts, MapNames.sockState, MapNames.sockHash].map((name) => openPinned(path.join(dir, name)));
      const [members, shortcuts, sockState, sockHash] = fds;
      if (members == null || shortcuts == null || sockState == null || sockHash == null) {
        for (const fd of fds) if (fd !== null) closeFd(fd);
        return null;
      }
      // Entries of another size would be read wrong by its programs, and
      // one without the kernel's byte count would leave a busy connection
      // looking idle (the layout before accel_shortcut.sent).
      const valueSize = mapInfo(shortcuts).valueSize;
      const misfit = valueSize !== ShortcutLayout.size;
      if (misfit)
        log.warn(
          `no shortcut for the connections of ${dir}: its ${MapNames.shortcuts} has entries of ${valueSize} B, not ${ShortcutLayout.size} (attached by another build of accel: detach and attach it)`,
        );
      o = { dir, ino, members, shortcuts, sockState, sockHash, upstreams: openPinned(path.join(dir, MapNames.upstreams)), misfit, users: 0 };
      this.opened.set(dir, o);
    }
    o.users++;
    return o;
  }

  /** @internal A plan is done with `o`. The current maps of a directory
   * stay open for the next connection (attachmentIds() checks they are
   * still the pinned ones); replaced ones are closed once no plan uses
   * them. */
  release(o: Opened): void {
    o.users--;
    this.unused(o);
  }

  private unused(o: Opened): void {
    if (o.users > 0 || this.opened.get(o.dir) === o) return;
    closeFd(o.members);
    closeFd(o.shortcuts);
    closeFd(o.sockState);
    closeFd(o.sockHash);
    if (o.upstreams !== null) closeFd(o.upstreams);
  }

  /** Close every map it keeps open, and make no more plans (the proxy
   * stops). */
  close(): void {
    this.closed = true;
    const all = [...this.opened.values()];
    this.opened.clear();
    for (const o of all) this.unused(o);
  }
}

const fdKey = (fd: number) => {
  const key = Buffer.alloc(4);
  key.writeInt32LE(fd);
  return key;
};

/** What a plan writes, by kind. */
export interface ShortcutSetup {
  kind: ShortcutKind;
  /** local: client to server, then server to client; egress: the client's. */
  entries: ShortcutEntry[];
  /** The proxy's accepted and upstream sockets. */
  relays: [number, number];
  /** Those of them that must send by TCP only (the kernel counts them). */
  tcpOnly: number[];
  /** egress: the upstream socket, put in accel_sock_hash under its own key
   * (it leaves at its close, as every socket does). */
  intoMap: { key: Buffer; fd: number } | null;
}

/** The shortcut of one connection, from its making to its end. */
export class ShortcutPlan {
  private ended = false;

  constructor(
    private readonly maps: ShortcutMaps,
    private readonly o: Opened,
    readonly setup: ShortcutSetup,
  ) {}

  get kind(): ShortcutKind {
    return this.setup.kind;
  }

  get entries(): ShortcutEntry[] {
    return this.setup.entries;
  }

  /**
   * Make the proxy's relaying sockets send by TCP only and both reset on
   * close, put an egress shortcut's upstream socket in the map, then the
   * entries: from now on each side takes the shortcut as soon as what it
   * sent before has gone through the proxy. Before the proxy writes a byte
   * into either socket: an sk_msg redirect would pass the kernel's count
   * (write_seq), and the shortcut would never be taken. The reset: a proxy
   * that dies holding relayed bytes must not end either side's stream
   * cleanly short of them (written() takes it back once the proxy has
   * written everything and its FIN). Undone entirely if any step fails.
   */
  install(): void {
    const { entries, relays, tcpOnly, intoMap } = this.setup;
    const state = tcpOnlySockState();
    const made: Buffer[] = [];
    const added: Buffer[] = [];
    let mapped = false;
    try {
      for (const fd of tcpOnly) {
        // The socket has sent nothing, so it has no state yet (skmsg.c
        // makes it at a first send held back or passed): one that has is
        // left as it is, and the connection relayed.
        update(this.o.sockState, fdKey(fd), state, BPF_NOEXIST);
        made.push(fdKey(fd));
      }
      for (const fd of relays) resetOnClose(fd);
      if (intoMap) {
        const value = Buffer.alloc(8);
        value.writeBigUInt64LE(BigInt(intoMap.fd));
        update(this.o.sockHash, intoMap.key, value, BPF_NOEXIST);
        mapped = true;
      }
      for (const e of entries) {
        update(this.o.shortcuts, e.key, encodeShortcut(e.value), BPF_NOEXIST);
        added.push(e.key);
      }
    } catch (err) {
      // Nothing was written into either socket yet: as if never tried.
      for (const key of added) remove(this.o.shortcuts, key);
      if (mapped && intoMap) remove(this.o.sockHash, intoMap.key);
      for (const key of made) remove(this.o.sockState, key);
      for (const fd of relays) lingerOff(fd);
      throw err;
    }
  }

  /** The proxy has written everything into relay `i` (0: its accepted
   * socket, 1: its upstream one) and queued its FIN: a close from now on
   * may end that stream cleanly (the kernel still sends what is queued). */
  written(i: 0 | 1): void {
    lingerOff(this.setup.relays[i]);
  }

  /**
   * Bytes sent by the shortcut so far, both ways (the kernel counts them in
   * the entries as each message takes it): the proxy's idle timeout reads
   * it, a local shortcut's bytes showing on none of the proxy's sockets. An
   * entry gone (its sender closed) counts 0. One map lookup per entry.
   */
  sent(): bigint {
    if (this.ended) return 0n;
    let n = 0n;
    for (const e of this.setup.entries) {
      const v = lookup(this.o.shortcuts, e.key, ShortcutLayout.size);
      if (v) n += shortcutSent(v);
    }
    return n;
  }

  /** Take the entries out (if still there) and let go of the maps. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    try {
      for (const e of this.setup.entries) {
        try {
          remove(this.o.shortcuts, e.key);
        } catch (err) {
          log.warn(`shortcut entry not removed: ${(err as Error).message}`);
        }
      }
    } finally {
      this.maps.release(this.o);
    }
  }

  /** Not installed after all: let go of the maps. */
  abandon(): void {
    if (this.ended) return;
    this.ended = true;
    this.maps.release(this.o);
  }
}
