/**
 * A running proxy's record, /run/accel/proxy-netns-<inode>-port-<port>.json:
 * who listens on the proxy port of a network namespace and which mark its
 * upstream sockets carry. attach reads it to refuse a --proxy-mark that
 * differs: a proxy in the attached cgroup whose upstream connections lack
 * the mark the tc program skips would have them steered back to itself,
 * one connection after another. Written once the proxy listens, removed
 * when it stops; a record whose process is gone means nothing.
 */
import fs from 'node:fs';
import { z } from 'zod';
import { ErrorCodes, isAccelError } from '../errors.js';
import { log } from '../log.js';
import { currentNetns } from '../net/iproute.js';
import { proxyRecordPath } from '../paths.js';
import { readState, removeState, stateKind, writeState } from '../state/store.js';

export interface ProxyRecord {
  version: 1;
  pid: number;
  netns: number;
  port: number;
  /** SO_MARK of its upstream sockets. */
  mark: number;
  startedAt: string;
  /** The process's start time (field 22 of /proc/<pid>/stat): a pid used
   * again by another process does not pass for the proxy. */
  pidStart: string;
}

function processStart(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

export const ProxyRecordKind = stateKind<ProxyRecord>(
  'proxy record',
  z.object({
    version: z.literal(1),
    pid: z.number().int().min(1),
    netns: z.number().int().min(0),
    port: z.number().int().min(1).max(65535),
    mark: z.number().int().min(0).max(0xffffffff),
    startedAt: z.string(),
    pidStart: z.string(),
  }),
);

/** The record of the live proxy on `port` of this network namespace, or null. */
export function readProxyRecord(port: number, netns: number = currentNetns()): ProxyRecord | null {
  const file = proxyRecordPath(netns, port);
  let r: ProxyRecord | null;
  try {
    r = readState(file, ProxyRecordKind);
  } catch (err) {
    if (!isAccelError(err, ErrorCodes.STATE)) throw err;
    // Not whole: no proxy we know of (the next proxy on the port replaces it).
    log.warn(err.message);
    return null;
  }
  return r && r.netns === netns && r.port === port && processStart(r.pid) === r.pidStart ? r : null;
}

/** Announce this process as the proxy on `port` (atomic). Returns the
 * function that takes the record back, if it is still this process's. */
export function announceProxy(port: number, mark: number): () => void {
  const netns = currentNetns();
  const file = proxyRecordPath(netns, port);
  const record: ProxyRecord = {
    version: 1,
    pid: process.pid,
    netns,
    port,
    mark: mark >>> 0,
    startedAt: new Date().toISOString(),
    pidStart: processStart(process.pid) ?? '',
  };
  writeState(file, ProxyRecordKind, record);
  return () => {
    if (readProxyRecord(port, netns)?.pid === process.pid) removeState(file);
  };
}
