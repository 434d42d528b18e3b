/**
 * What the proxy learns about a connection before deciding, and what it
 * does with an allowed one. Kept apart from the server so that the rules
 * that must fail closed (no name in time, keep-alive under a Host policy)
 * can be tested without privileges.
 */
import type net from 'node:net';
import type { Binding } from './name-binding.js';
import type { ConnectionFacts, Decision, Policy } from './policy.js';
import { SNIFF_LIMIT, type Sniffed, sniff } from './sniff.js';

export type NameFacts = Pick<ConnectionFacts, 'protocol' | 'sni' | 'host'>;

/** Read until the first bytes say enough (or limit/timeout/end); the socket
 * is paused again afterwards and the bytes are returned for the upstream.
 * A client that has not said enough in time stays 'incomplete': no name. */
export function readFirstBytes(sock: net.Socket, timeoutMs: number): Promise<{ bytes: Buffer; sniffed: Sniffed }> {
  return new Promise((resolve) => {
    let bytes = Buffer.alloc(0);
    let sniffed: Sniffed = { kind: 'incomplete' };
    const finish = () => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('end', finish);
      sock.off('close', finish);
      sock.pause();
      resolve({ bytes, sniffed });
    };
    const onData = (chunk: Buffer) => {
      bytes = Buffer.concat([bytes, chunk]);
      sniffed = sniff(bytes);
      if (bytes.length >= SNIFF_LIMIT || sniffed.kind !== 'incomplete') finish();
    };
    const timer = setTimeout(finish, timeoutMs);
    sock.on('data', onData);
    sock.once('end', finish);
    sock.once('close', finish);
    sock.resume();
  });
}

/** The facts the policy weighs; a name is left out unless the sniffer
 * trusts it, which the policy reads as "unknown". */
export function factsOf(s: Sniffed): NameFacts {
  if (s.kind === 'tls') return { protocol: 'tls', sni: s.sni };
  if (s.kind === 'http') return { protocol: 'http', host: s.host };
  return {};
}

/** Checks that a name belongs to the destination (NameBinder.check). */
export type BindName = (name: string, destination: string) => Promise<Binding>;

const sameDecision = (a: Decision, b: Decision) => a.action === b.action && a.reason === b.reason && a.splice === b.splice && a.dependsOnHost === b.dependsOnHost;

/**
 * The policy's decision once the connection's name (SNI or Host) is bound
 * to its destination: a name that is not an address's of the destination
 * (or cannot be verified in time) counts as no name, "unknown". The
 * resolver is asked only when the name changes the decision: the policy
 * decides with the name trusted and without it, and only if those differ
 * is the name checked (a rule before any name rule, or a name no rule
 * names, costs no lookup).
 */
export function decideWithBinding(policy: Policy, facts: ConnectionFacts, bind: BindName): Decided | Promise<Decided> {
  const trusted = policy.decide(facts);
  const name = facts.sni ?? facts.host;
  if (name === undefined) return { decision: trusted };
  const untrusted = policy.decide({ ...facts, sni: undefined, host: undefined });
  if (sameDecision(trusted, untrusted)) return { decision: trusted };
  return bind(name, facts.destination).then((binding) =>
    binding.bound ? { decision: trusted, binding } : { decision: { ...untrusted, reason: `${untrusted.reason}; ${name} unverified: ${binding.why}` }, binding },
  );
}

/** binding: present when the name was checked. */
export interface Decided {
  decision: Decision;
  binding?: Binding;
}

export type DataPath = 'inspect' | 'shortcut' | 'splice' | 'relay' | 'relay-fastpath';

/**
 * How an allowed connection's bytes flow. An HTTP connection whose decision
 * weighed a Host rule is inspected: each later request on it may name
 * another Host, which neither the kernel (splice) nor a blind relay would
 * see. Otherwise: splice when the rule allows it and a splicer exists,
 * unless a hop, the client's or the upstream's, is on the sk_msg fast path
 * (its bytes move by sk_msg, which the splice neither sees nor counts: the
 * stream would split, or a half-close wait forever for bytes it cannot
 * count). The shortcut (client and server both local, on the fast
 * path) comes first where the rule allows splicing: it takes the proxy out
 * of the data path altogether.
 */
export function chooseDataPath(decision: Decision, facts: NameFacts, o: { canSplice: boolean; onFastPath: () => boolean; canShortcut?: () => boolean }): DataPath {
  if (facts.protocol === 'http' && decision.dependsOnHost) return 'inspect';
  if (!decision.splice) return 'relay';
  if (o.canShortcut?.()) return 'shortcut';
  if (!o.canSplice) return 'relay';
  return o.onFastPath() ? 'relay-fastpath' : 'splice';
}
