/**
 * Whether a name a client gives (TLS SNI, HTTP Host) belongs to the address
 * it connects to. A name rule must not be satisfied by naming an allowed
 * host while connecting to another address (Squid's host_verify_strict,
 * Cilium's toFQDNs), so the proxy asks the host's resolver, as the
 * application would have:
 *
 * 1. /etc/hosts first (glibc's `files` source, which nsswitch.conf puts
 *    before `dns` everywhere): if the name is there, its lines are the
 *    answer and DNS is not asked. Read again when the file changes.
 * 2. Otherwise DNS, through the name servers of /etc/resolv.conf (c-ares,
 *    node:dns resolve4/resolve6, asynchronous: a slow name server never
 *    blocks the proxy's thread pool, as getaddrinfo would), for the
 *    destination's family only, with TTLs.
 *
 * An answer is kept for its TTL (at least 1 s, at most 5 min), a name that does not
 * exist for NEGATIVE_TTL_MS, an error for ERROR_TTL_MS; at most maxEntries
 * names, the least recently used going first. A destination missing from a
 * cached answer asks again (at most once per REFRESH_MS), and the new
 * addresses join the old ones, each for its own TTL: names whose answers
 * rotate through a pool of addresses stay bound to the pool. A lookup waits
 * at most timeoutMs. An IP address as the name is bound to itself only.
 *
 * Anything but "the destination is among the name's addresses" is not
 * bound: the policy then treats the name as unknown.
 */
import fs from 'node:fs';
import dns from 'node:dns';
import net from 'node:net';
import { ipToBytes } from '../maps/layout/shared.js';

export type Binding = { bound: true; source: 'address' | 'hosts' | 'dns' } | { bound: false; why: string };

/** One DNS question's answer for `name` in `family`. */
export type DnsAnswer = { addresses: { address: string; ttl: number }[] } | { missing: true } | { error: string };
export type DnsQuery = (name: string, family: 4 | 6) => Promise<DnsAnswer>;

export const HOSTS_FILE = '/etc/hosts';
const MAX_TTL_MS = 300_000;
const NEGATIVE_TTL_MS = 5_000;
const ERROR_TTL_MS = 1_000;
const REFRESH_MS = 1_000;
/** How often /etc/hosts is looked at for a change (a stat). */
const HOSTS_CHECK_MS = 1_000;

export interface NameBinderOptions {
  /** Longest wait for an answer; then the name is not bound (timeout). */
  timeoutMs?: number;
  /** Names cached at most. */
  maxEntries?: number;
  /** DNS questions in flight at most; one more is not asked (busy). */
  maxInFlight?: number;
  hostsFile?: string;
  dns?: DnsQuery;
  now?: () => number;
}

interface Entry {
  /** Address (16 bytes, hex) -> until when it is valid. */
  addresses: Map<string, number>;
  /** NXDOMAIN/NODATA or an error, until when. */
  failure: { why: string; until: number } | null;
  askedAt: number;
}

const key = (address: string): string => ipToBytes(address).toString('hex');

/** node:dns through c-ares; never rejects. */
export function resolverQuery(timeoutMs: number): DnsQuery {
  const resolver = new dns.promises.Resolver({ timeout: Math.max(100, Math.ceil(timeoutMs / 2)), tries: 2 });
  return async (name, family) => {
    try {
      const addresses = family === 4 ? await resolver.resolve4(name, { ttl: true }) : await resolver.resolve6(name, { ttl: true });
      return { addresses };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      return code === dns.NOTFOUND || code === dns.NODATA ? { missing: true } : { error: code };
    }
  };
}

export class NameBinder {
  private readonly cache = new Map<string, Entry>();
  private readonly inFlight = new Map<string, Promise<void>>();
  private hosts: { names: Map<string, Set<string>>; stamp: string; checkedAt: number } | null = null;
  private readonly timeoutMs: number;
  private readonly maxEntries: number;
  private readonly maxInFlight: number;
  private readonly hostsFile: string;
  private readonly dns: DnsQuery;
  private readonly now: () => number;

  constructor(o: NameBinderOptions = {}) {
    this.timeoutMs = o.timeoutMs ?? 1000;
    this.maxEntries = o.maxEntries ?? 4096;
    this.maxInFlight = o.maxInFlight ?? 256;
    this.hostsFile = o.hostsFile ?? HOSTS_FILE;
    this.dns = o.dns ?? resolverQuery(this.timeoutMs);
    this.now = o.now ?? Date.now;
  }

  /** Is `destination` (an IP address) an address of `name` (canonical, see
   * names.ts)? */
  async check(name: string, destination: string): Promise<Binding> {
    if (!net.isIP(destination)) return { bound: false, why: 'destination is not an address' };
    const dest = key(destination);
    if (net.isIP(name)) return key(name) === dest ? { bound: true, source: 'address' } : { bound: false, why: `${name} is another address` };
    const fromHosts = this.hostsAddresses(name);
    if (fromHosts) return fromHosts.has(dest) ? { bound: true, source: 'hosts' } : { bound: false, why: `not an address of ${name} in ${this.hostsFile}` };

    const family = net.isIPv6(destination) && !ipToBytes(destination).subarray(0, 12).equals(V4_MAPPED) ? 6 : 4;
    const k = `${family}:${name}`;
    let entry = this.lookupCache(k);
    const now = this.now();
    // Asked again unless the cache binds it, holds a failure still valid,
    // or was filled just now.
    const cached = entry && ((entry.addresses.get(dest) ?? 0) > now || (entry.failure !== null && entry.failure.until > now) || now - entry.askedAt < REFRESH_MS);
    if (!cached) {
      const asked = await this.ask(k, name, family);
      if (asked === 'busy') return { bound: false, why: `resolver busy (${this.maxInFlight} questions in flight)` };
      if (asked === 'timeout') return { bound: false, why: `no answer for ${name} within ${this.timeoutMs} ms` };
      entry = this.lookupCache(k);
    }
    return entry ? this.verdict(entry, dest, name) : { bound: false, why: `no answer for ${name}` };
  }

  private verdict(entry: Entry, dest: string, name: string): Binding {
    const now = this.now();
    if ((entry.addresses.get(dest) ?? 0) > now) return { bound: true, source: 'dns' };
    if (entry.failure && entry.failure.until > now) return { bound: false, why: `${name}: ${entry.failure.why}` };
    return { bound: false, why: `not an address of ${name} in DNS` };
  }

  private lookupCache(k: string): Entry | undefined {
    const e = this.cache.get(k);
    if (!e) return undefined;
    // Least recently used goes first: a hit moves to the back.
    this.cache.delete(k);
    this.cache.set(k, e);
    return e;
  }

  /** Ask DNS (one question per name at a time, a bounded number at once). */
  private async ask(k: string, name: string, family: 4 | 6): Promise<'answered' | 'timeout' | 'busy'> {
    let pending = this.inFlight.get(k);
    if (!pending) {
      if (this.inFlight.size >= this.maxInFlight) return 'busy';
      const askedAt = this.now();
      pending = this.dns(name, family).then((answer) => this.store(k, answer, askedAt));
      this.inFlight.set(k, pending);
      void pending.finally(() => this.inFlight.delete(k));
    }
    let timer: NodeJS.Timeout | undefined;
    const answered = await Promise.race([pending.then(() => true), new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), this.timeoutMs)))]);
    clearTimeout(timer);
    return answered ? 'answered' : 'timeout';
  }

  private store(k: string, answer: DnsAnswer, askedAt: number): void {
    const now = this.now();
    const entry = this.cache.get(k) ?? { addresses: new Map<string, number>(), failure: null, askedAt };
    entry.askedAt = askedAt;
    for (const [a, until] of entry.addresses) if (until <= now) entry.addresses.delete(a);
    if ('addresses' in answer) {
      entry.failure = null;
      for (const { address, ttl } of answer.addresses) {
        if (!net.isIP(address)) continue;
        // TTL 0 means "for this question only": kept 1 s, the question's span.
        entry.addresses.set(key(address), now + Math.min(Math.max(ttl, 1) * 1000, MAX_TTL_MS));
      }
    } else if ('missing' in answer) entry.failure = { why: 'no such name (NXDOMAIN or no address)', until: now + NEGATIVE_TTL_MS };
    else entry.failure = { why: `resolver error ${answer.error}`, until: now + ERROR_TTL_MS };
    this.cache.delete(k);
    this.cache.set(k, entry);
    while (this.cache.size > this.maxEntries) {
      const oldest = this.cache.keys().next().value as string;
      this.cache.delete(oldest);
    }
  }

  /** The name's addresses in the hosts file, or null if it is not there. */
  private hostsAddresses(name: string): Set<string> | null {
    const now = this.now();
    if (!this.hosts || now - this.hosts.checkedAt >= HOSTS_CHECK_MS) {
      let stamp = '';
      try {
        const st = fs.statSync(this.hostsFile);
        stamp = `${st.ino}:${st.size}:${st.mtimeMs}`;
      } catch {
        stamp = 'absent';
      }
      if (!this.hosts || this.hosts.stamp !== stamp) this.hosts = { names: stamp === 'absent' ? new Map() : readHosts(this.hostsFile), stamp, checkedAt: now };
      else this.hosts.checkedAt = now;
    }
    return this.hosts.names.get(name) ?? null;
  }
}

const V4_MAPPED = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

/** name -> addresses (16 bytes, hex) of a hosts(5) file; lines that do not
 * start with an address are skipped. */
export function parseHosts(text: string): Map<string, Set<string>> {
  const names = new Map<string, Set<string>>();
  for (const raw of text.split('\n')) {
    const fields = (raw.split('#')[0] ?? '').trim().split(/\s+/);
    const address = fields[0] ?? '';
    if (!net.isIP(address) || fields.length < 2) continue;
    for (const n of fields.slice(1)) {
      const name = n.toLowerCase().replace(/\.$/, '');
      const set = names.get(name) ?? new Set<string>();
      set.add(key(address));
      names.set(name, set);
    }
  }
  return names;
}

function readHosts(file: string): Map<string, Set<string>> {
  try {
    return parseHosts(fs.readFileSync(file, 'utf8'));
  } catch {
    return new Map();
  }
}
