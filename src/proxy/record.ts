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
import { ownedDir } from '../bpf/bpffs.js';
import { currentNetns } from '../net/iproute.js';
import { STATE_DIR, proxyRecordPath } from '../paths.js';

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

/** The record of the live proxy on `port` of this network namespace, or null. */
export function readProxyRecord(port: number, netns: number = currentNetns()): ProxyRecord | null {
  try {
    const r = JSON.parse(fs.readFileSync(proxyRecordPath(netns, port), 'utf8')) as ProxyRecord;
    return r.version === 1 && r.netns === netns && r.port === port && processStart(r.pid) === r.pidStart ? r : null;
  } catch {
    // Absent, or torn by a crash: no proxy we know of.
    return null;
  }
}

/** Announce this process as the proxy on `port` (atomic). Returns the
 * function that takes the record back, if it is still this process's. */
export function announceProxy(port: number, mark: number): () => void {
  ownedDir(STATE_DIR);
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
  fs.writeFileSync(`${file}.${process.pid}`, JSON.stringify(record));
  fs.renameSync(`${file}.${process.pid}`, file);
  return () => {
    if (readProxyRecord(port, netns)?.pid === process.pid) fs.rmSync(file, { force: true });
  };
}
