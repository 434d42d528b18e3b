/**
 * The proxy's policy: an ordered list of rules, the first whose conditions
 * all hold decides; `default` decides when none does. Conditions: the
 * original destination (CIDRs), its port(s), and from the first bytes of
 * the stream the TLS SNI or the HTTP Host (exact, or "*.suffix").
 *
 * A connection may give no name (nothing sent in time, not TLS or HTTP, a
 * name the sniffer will not trust). A rule that needs the name can then
 * neither match nor be skipped safely: an allow rule does not match (no
 * name earns an allow), and a deny rule decides `unknown` (default "deny":
 * otherwise a client gets past `deny sni x` by hiding x; "allow" makes such
 * deny rules not apply and lets the rules after them decide). A plain HTTP
 * connection has no SNI and a TLS one shows no Host: those conditions are
 * simply false for them.
 *
 *   { "default": "allow", "unknown": "deny",
 *     "rules": [ { "action": "deny", "destination": ["10.200.0.2/32"], "ports": "9000-9100" },
 *                { "action": "allow", "sni": "*.example.com", "splice": false } ] }
 *
 * `splice` (default true) lets an allowed connection be handed to the kernel
 * once decided (accel proxy --splice); false keeps it relayed in user space.
 */
import fs from 'node:fs';
import net from 'node:net';
import { z } from 'zod';
import { AccelError, ErrorCodes } from '../errors.js';
import { parseCidr, parsePortRange } from '../net/rules.js';

const cidr = z.string().refine(
  (s) => {
    try {
      parseCidr(s);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'not an IP address or CIDR' },
);
const ports = z.union([z.number().int().min(1).max(65535), z.string().regex(/^(\*|\d{1,5}(-\d{1,5})?)$/, 'expected "N", "N-M" or "*"')]);
const hostPattern = z.string().regex(/^(\*\.)?[A-Za-z0-9_.:-]+$/, 'expected a host name, an address or *.suffix');
const oneOrMany = <T extends z.ZodTypeAny>(t: T) => z.union([t, z.array(t).nonempty()]);

const ruleSchema = z
  .object({
    action: z.enum(['allow', 'deny']),
    destination: oneOrMany(cidr).optional(),
    ports: oneOrMany(ports).optional(),
    sni: oneOrMany(hostPattern).optional(),
    host: oneOrMany(hostPattern).optional(),
    splice: z.boolean().optional(),
    name: z.string().optional(),
  })
  .strict();

const policySchema = z
  .object({
    default: z.enum(['allow', 'deny']).default('allow'),
    unknown: z.enum(['allow', 'deny']).default('deny'),
    rules: z.array(ruleSchema).default([]),
  })
  .strict();

export type Action = 'allow' | 'deny';

export interface ConnectionFacts {
  destination: string;
  port: number;
  /** What the first bytes were; undefined: not known. */
  protocol?: 'tls' | 'http' | undefined;
  /** undefined: not known (no bytes looked at, or no name to trust). */
  sni?: string | undefined;
  host?: string | undefined;
}

export interface Decision {
  action: Action;
  /** "rule 2 (name)" or "default". */
  reason: string;
  splice: boolean;
  /** A rule with a Host condition was weighed: another request on this
   * HTTP connection, with another Host, might be decided otherwise. */
  dependsOnHost: boolean;
}

interface CompiledRule {
  action: Action;
  label: string;
  destinations: net.BlockList | null;
  ports: [number, number][] | null;
  sni: string[] | null;
  host: string[] | null;
  splice: boolean;
}

const list = <T>(v: T | T[] | undefined): T[] | null => (v === undefined ? null : Array.isArray(v) ? v : [v]);

function hostMatches(patterns: string[], name: string): boolean {
  const n = name.toLowerCase().replace(/\.$/, '');
  return patterns.some((p) => {
    const q = p.toLowerCase();
    return q.startsWith('*.') ? n.endsWith(q.slice(1)) && n.length > q.length - 1 : n === q;
  });
}

/** A name condition: true, false, or 'unknown' when the name is missing
 * and the protocol does not rule it out. */
function nameCondition(patterns: string[] | null, name: string | undefined, carriedBy: 'tls' | 'http', protocol: ConnectionFacts['protocol']): boolean | 'unknown' {
  if (!patterns) return true;
  if (name !== undefined) return hostMatches(patterns, name);
  return protocol !== undefined && protocol !== carriedBy ? false : 'unknown';
}

export class Policy {
  private constructor(
    private readonly rules: CompiledRule[],
    readonly defaultAction: Action,
    /** What a deny rule that needs a missing name decides. */
    readonly unknownAction: Action,
  ) {}

  /** Validate and compile; E_POLICY names the first problem and where. */
  static parse(value: unknown, source = 'policy'): Policy {
    const r = policySchema.safeParse(value);
    if (!r.success) {
      const issue = r.error.issues[0];
      const where = issue?.path.length ? issue.path.join('.') : '(top level)';
      throw new AccelError(ErrorCodes.POLICY, `${source}: ${where}: ${issue?.message ?? 'invalid'}`);
    }
    const rules = r.data.rules.map((rule, i): CompiledRule => {
      let destinations: net.BlockList | null = null;
      const dests = list(rule.destination);
      if (dests) {
        destinations = new net.BlockList();
        for (const d of dests) {
          const c = parseCidr(d);
          destinations.addSubnet(c.address, c.prefixLength, c.family);
        }
      }
      return {
        action: rule.action,
        label: `rule ${i + 1}${rule.name ? ` (${rule.name})` : ''}`,
        destinations,
        ports: list(rule.ports)?.map((p) => (typeof p === 'number' ? [p, p] : parsePortRange(p))) ?? null,
        sni: list(rule.sni),
        host: list(rule.host),
        splice: rule.splice ?? true,
      };
    });
    return new Policy(rules, r.data.default, r.data.unknown);
  }

  static load(file: string): Policy {
    return Policy.parse(readPolicyFile(file), file);
  }

  static allowAll(): Policy {
    return Policy.parse({});
  }

  /** Whether any rule looks at the stream's first bytes (SNI, Host). */
  get needsPayload(): boolean {
    return this.rules.some((r) => r.sni || r.host);
  }

  decide(f: ConnectionFacts): Decision {
    const family = net.isIPv6(f.destination) ? 'ipv6' : 'ipv4';
    let dependsOnHost = false;
    for (const r of this.rules) {
      if (r.destinations && !r.destinations.check(f.destination, family)) continue;
      if (r.ports && !r.ports.some(([lo, hi]) => f.port >= lo && f.port <= hi)) continue;
      dependsOnHost ||= r.host !== null;
      const sni = nameCondition(r.sni, f.sni, 'tls', f.protocol);
      const host = nameCondition(r.host, f.host, 'http', f.protocol);
      if (sni === false || host === false) continue;
      if (sni === 'unknown' || host === 'unknown') {
        if (r.action === 'deny' && this.unknownAction === 'deny') {
          return { action: 'deny', reason: `unknown ${sni === 'unknown' ? 'sni' : 'host'} (${r.label})`, splice: r.splice, dependsOnHost };
        }
        continue;
      }
      return { action: r.action, reason: r.label, splice: r.splice, dependsOnHost };
    }
    return { action: this.defaultAction, reason: 'default', splice: true, dependsOnHost };
  }
}

/** A policy file's JSON value, unchecked (Policy.parse checks it). */
export function readPolicyFile(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new AccelError(ErrorCodes.POLICY, `cannot read policy file ${file}: ${(err as Error).message}`);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new AccelError(ErrorCodes.POLICY, `${file} is not valid JSON: ${(err as Error).message}`);
  }
}
