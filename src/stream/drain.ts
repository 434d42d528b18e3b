/** Shutting a server down gracefully: the listeners stop accepting at
 * once; open sockets get up to graceMs to finish, then are destroyed. */
import type net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { log } from '../log.js';

export async function closeGracefully(servers: net.Server[], open: Set<net.Socket>, graceMs: number): Promise<void> {
  // close()'s own callback would wait for every connection, unbounded.
  for (const s of servers) s.close();
  const deadline = Date.now() + graceMs;
  while (open.size && Date.now() < deadline) await sleep(Math.min(50, Math.max(1, deadline - Date.now())));
  if (open.size) log.warn(`closing ${open.size} sockets still open after ${graceMs} ms`);
  for (const s of open) s.destroy();
}
