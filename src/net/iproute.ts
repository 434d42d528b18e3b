/**
 * The routing and traffic-control state interception needs, read and
 * changed through iproute2 (ip, tc) in the caller's network namespace.
 * Every change has an exact inverse, and "add" functions report whether
 * they changed anything, so that callers record and later undo only what
 * they added.
 */
import fs from 'node:fs';
import { AccelError, ErrorCodes } from '../errors.js';
import { run } from '../proc/run.js';

export type IpFamily = 4 | 6;
export type TcDirection = 'ingress' | 'egress';

async function json<T>(program: string, args: string[]): Promise<T> {
  const r = await run(program, ['-j', ...args]);
  const text = r.stdout.trim();
  return (text ? JSON.parse(text) : []) as T;
}

export interface InterfaceInfo {
  ifindex: number;
  /** iproute2's name of the link-layer type: 'ether', 'loopback', 'none'
   * (tun, WireGuard and other devices without a link-layer header), 'ipip',
   * 'gre', ... */
  linkType: string;
}

/** Index and link type of a network interface of this namespace; E_USAGE
 * if none. */
export async function interfaceInfo(name: string): Promise<InterfaceInfo> {
  if (!/^[A-Za-z0-9_.:@-]{1,15}$/.test(name)) throw new AccelError(ErrorCodes.USAGE, `invalid interface name "${name}"`);
  const r = await run('ip', ['-j', 'link', 'show', 'dev', name], { allowFailure: true });
  if (r.exitCode !== 0) throw new AccelError(ErrorCodes.USAGE, `unknown interface ${name} (in this network namespace)`);
  const links = JSON.parse(r.stdout) as { ifindex: number; link_type?: string }[];
  const index = links[0]?.ifindex;
  if (!index) throw new AccelError(ErrorCodes.USAGE, `unknown interface ${name}`);
  return { ifindex: index, linkType: links[0]?.link_type ?? 'none' };
}

/** Index of a network interface of this namespace; E_USAGE if none. */
export async function interfaceIndex(name: string): Promise<number> {
  return (await interfaceInfo(name)).ifindex;
}

// ---- policy routing: fwmark rule -> table with a local default route ----

export interface MarkRule {
  family: IpFamily;
  priority: number;
  mark: number;
  table: number;
}

function hex(n: number): string {
  return `0x${(n >>> 0).toString(16)}`;
}

function ruleArgs(r: MarkRule): string[] {
  return ['pref', String(r.priority), 'fwmark', hex(r.mark), 'lookup', String(r.table)];
}

interface RuleJson {
  priority: number;
  fwmark?: string;
  fwmask?: string;
  table: string;
}

async function rules(family: IpFamily): Promise<RuleJson[]> {
  return json<RuleJson[]>('ip', [`-${family}`, 'rule', 'show']);
}

export async function hasMarkRule(r: MarkRule): Promise<boolean> {
  return (await rules(r.family)).some((x) => x.priority === r.priority && x.fwmark !== undefined && Number(x.fwmark) === r.mark >>> 0 && x.table === String(r.table) && !x.fwmask);
}

/** Another rule at our priority, which we would not want to shadow. */
export async function priorityTaken(r: MarkRule): Promise<boolean> {
  return (await rules(r.family)).some((x) => x.priority === r.priority);
}

export async function addMarkRule(r: MarkRule): Promise<boolean> {
  if (await hasMarkRule(r)) return false;
  await run('ip', [`-${r.family}`, 'rule', 'add', ...ruleArgs(r)]);
  return true;
}

export async function deleteMarkRule(r: MarkRule): Promise<void> {
  if (await hasMarkRule(r)) await run('ip', [`-${r.family}`, 'rule', 'del', ...ruleArgs(r)]);
}

export interface LocalRoute {
  family: IpFamily;
  table: number;
}

interface RouteJson {
  type?: string;
  dst: string;
  dev?: string;
}

export async function tableRoutes(family: IpFamily, table: number): Promise<RouteJson[]> {
  const r = await run('ip', ['-j', `-${family}`, 'route', 'show', 'table', String(table)], { allowFailure: true });
  // An empty or never used table is not an error for our purposes.
  if (r.exitCode !== 0 || !r.stdout.trim()) return [];
  return JSON.parse(r.stdout) as RouteJson[];
}

function isOurRoute(x: RouteJson): boolean {
  return x.type === 'local' && x.dst === 'default' && x.dev === 'lo';
}

export async function hasLocalRoute(r: LocalRoute): Promise<boolean> {
  return (await tableRoutes(r.family, r.table)).some(isOurRoute);
}

/** Routes in the table other than ours: the table belongs to someone else. */
export async function foreignRoutes(r: LocalRoute): Promise<number> {
  return (await tableRoutes(r.family, r.table)).filter((x) => !isOurRoute(x)).length;
}

function routeArgs(r: LocalRoute, op: 'add' | 'del'): string[] {
  return [`-${r.family}`, 'route', op, 'local', r.family === 4 ? '0.0.0.0/0' : '::/0', 'dev', 'lo', 'table', String(r.table)];
}

export async function addLocalRoute(r: LocalRoute): Promise<boolean> {
  if (await hasLocalRoute(r)) return false;
  await run('ip', routeArgs(r, 'add'));
  return true;
}

export async function deleteLocalRoute(r: LocalRoute): Promise<void> {
  if (await hasLocalRoute(r)) await run('ip', routeArgs(r, 'del'));
}

// ---- tc: clsact qdisc and BPF filters ----

export async function hasClsact(dev: string): Promise<boolean> {
  return (await json<{ kind: string }[]>('tc', ['qdisc', 'show', 'dev', dev])).some((q) => q.kind === 'clsact');
}

export async function addClsact(dev: string): Promise<boolean> {
  if (await hasClsact(dev)) return false;
  await run('tc', ['qdisc', 'add', 'dev', dev, 'clsact']);
  return true;
}

export async function deleteClsact(dev: string): Promise<void> {
  if (await hasClsact(dev)) await run('tc', ['qdisc', 'del', 'dev', dev, 'clsact']);
}

export interface BpfFilter {
  dev: string;
  direction: TcDirection;
  priority: number;
}

export interface FilterInfo {
  priority: number;
  progId: number | null;
  progName: string | null;
}

export async function filters(dev: string, direction: TcDirection): Promise<FilterInfo[]> {
  if (!(await hasClsact(dev))) return [];
  const list = await json<{ pref: number; options?: { prog?: { id: number; name: string } } }[]>('tc', ['filter', 'show', 'dev', dev, direction]);
  return list.filter((f) => f.options).map((f) => ({ priority: f.pref, progId: f.options?.prog?.id ?? null, progName: f.options?.prog?.name ?? null }));
}

export async function addBpfFilter(f: BpfFilter, pinnedProgram: string): Promise<void> {
  await run('tc', ['filter', 'add', 'dev', f.dev, f.direction, 'pref', String(f.priority), 'handle', '1', 'bpf', 'direct-action', 'object-pinned', pinnedProgram]);
}

/** Swap the program of the filter at `f.priority` (added by addBpfFilter)
 * for the one pinned at `pinnedProgram`: the kernel replaces it in place,
 * atomically (cls_bpf), so packets never meet the hook without one. */
export async function replaceBpfFilter(f: BpfFilter, pinnedProgram: string): Promise<void> {
  await run('tc', ['filter', 'replace', 'dev', f.dev, f.direction, 'pref', String(f.priority), 'handle', '1', 'bpf', 'direct-action', 'object-pinned', pinnedProgram]);
}

export async function deleteBpfFilter(f: BpfFilter): Promise<void> {
  if ((await filters(f.dev, f.direction)).some((x) => x.priority === f.priority)) {
    await run('tc', ['filter', 'del', 'dev', f.dev, f.direction, 'pref', String(f.priority)]);
  }
}

// ---- sysctl (procfs of the caller's namespace) ----

function sysctlPath(name: string): string {
  return `/proc/sys/${name.replaceAll('.', '/')}`;
}

export function readSysctl(name: string): string {
  return fs.readFileSync(sysctlPath(name), 'utf8').trim();
}

export function writeSysctl(name: string, value: string): void {
  fs.writeFileSync(sysctlPath(name), value);
}

/** The inode of this process's network namespace: names it for as long as
 * it exists. */
export function currentNetns(): number {
  return fs.statSync('/proc/self/ns/net').ino;
}

/** Does the network namespace with this inode still exist? It does while a
 * process is in it or a bind mount (ip netns) holds it. */
export function netnsAlive(inode: number): boolean {
  const holders = [
    ...(fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns').map((n) => `/run/netns/${n}`) : []),
    ...fs
      .readdirSync('/proc')
      .filter((n) => /^\d+$/.test(n))
      .map((n) => `/proc/${n}/ns/net`),
  ];
  return holders.some((p) => {
    try {
      return fs.statSync(p).ino === inode;
    } catch {
      return false;
    }
  });
}

/** Is something listening on TCP `port` on a loopback or wildcard address
 * of this namespace (per /proc/net/tcp and tcp6)? */
export function loopbackListening(port: number): { ipv4: boolean; ipv6: boolean } {
  const portHex = port.toString(16).toUpperCase().padStart(4, '0');
  const scan = (file: string, addrs: string[]) => {
    let text = '';
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      return false;
    }
    return text
      .split('\n')
      .slice(1)
      .some((line) => {
        const cols = line.trim().split(/\s+/);
        const [addr, p] = (cols[1] ?? '').split(':');
        return cols[3] === '0A' && p === portHex && addrs.includes(addr ?? '');
      });
  };
  return {
    ipv4: scan('/proc/net/tcp', ['0100007F', '00000000']),
    ipv6: scan('/proc/net/tcp6', ['00000000000000000000000001000000', '00000000000000000000000000000000']),
  };
}

// ---- named network namespaces (the bench's private loopbacks) ----

/** A new named namespace (ip netns) with its lo up. */
export async function addNetns(name: string): Promise<void> {
  await run('ip', ['netns', 'add', name]);
  await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

export async function deleteNetns(name: string): Promise<void> {
  await run('ip', ['netns', 'delete', name], { allowFailure: true });
}
