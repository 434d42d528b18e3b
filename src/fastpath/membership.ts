/**
 * Is a socket on the local fast path (in the SOCKHASH of some attachment)?
 * The proxy asks before splicing: a socket whose bytes arrive through
 * sk_msg redirects never passes an SK_SKB verdict, so splicing it would
 * split its stream between the kernel and user space.
 */
import fs from 'node:fs';
import path from 'node:path';
import { closeFd, openPinned } from '../bpf/fd.js';
import { lookup } from '../bpf/map.js';
import { sockKeyOf } from '../maps/layout/shared.js';
import { netnsCookie } from '../sys/socket.js';
import { MapNames } from '../maps/fastpath.js';
import { attachmentPinDir, listAttachmentIds } from '../paths.js';

export interface SocketView {
  fd: number;
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
}

export function onFastPath(bpffs: string, s: SocketView): boolean {
  if (!fs.existsSync(bpffs)) return false;
  const key = sockKeyOf(netnsCookie(s.fd), s);
  for (const id of listAttachmentIds(bpffs)) {
    const fd = openPinned(path.join(attachmentPinDir(bpffs, id), MapNames.sockHash));
    if (fd === null) continue;
    try {
      if (lookup(fd, key, 8)) return true;
    } finally {
      closeFd(fd);
    }
  }
  return false;
}
