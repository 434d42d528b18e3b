/**
 * Intercept rules as users write them: a destination prefix and a port or
 * port range, e.g. 10.200.0.0/24:8080, 10.0.0.0/8:8000-8100,
 * [fd00:200::/64]:8080, fd00:200::/64:8080, 0.0.0.0/0:* (any port); and
 * the CIDRs and port ranges in them, which the proxy's policy reads too.
 */
import net from 'node:net';
import { AccelError, ErrorCodes } from '../errors.js';

/** A rule in the form the BPF side matches: destination prefix and ports
 * (maps/ encodes it into the tproxy map). */
export interface InterceptRule {
  /** Canonical text, e.g. 10.200.0.0/24:8080 or [fd00::/64]:8000-8100. */
  text: string;
  address: string;
  prefixLength: number;
  family: 'ipv4' | 'ipv6';
  portMin: number;
  portMax: number;
}

function bad(spec: string, why: string): never {
  throw new AccelError(ErrorCodes.USAGE, `invalid intercept rule "${spec}": ${why} (expected CIDR:PORT, CIDR:PORT-PORT or CIDR:*)`);
}

export function parsePortRange(text: string, spec = text): [number, number] {
  if (text === '*') return [1, 65535];
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  if (!m) bad(spec, `"${text}" is not a port or port range`);
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo < 1 || hi > 65535 || lo > hi) bad(spec, `port range ${text} is outside 1-65535 or reversed`);
  return [lo, hi];
}

/** Parse "a.b.c.d/len" or "x::/len" (brackets allowed). */
export function parseCidr(text: string, spec = text): { address: string; prefixLength: number; family: 'ipv4' | 'ipv6' } {
  const inner = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  const slash = inner.lastIndexOf('/');
  const address = slash < 0 ? inner : inner.slice(0, slash);
  const family = net.isIPv4(address) ? 'ipv4' : net.isIPv6(address) ? 'ipv6' : null;
  if (!family) bad(spec, `"${address}" is not an IP address`);
  const max = family === 'ipv4' ? 32 : 128;
  const lenText = slash < 0 ? String(max) : inner.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > max) bad(spec, `prefix length "${lenText}" is not 0-${max}`);
  return { address, prefixLength: Number(lenText), family };
}

export function parseInterceptRule(spec: string): InterceptRule {
  const s = spec.trim();
  let cidrText: string;
  let portText: string;
  const bracketed = /^\[([^\]]+)\]:(.+)$/.exec(s);
  if (bracketed) {
    cidrText = bracketed[1] ?? '';
    portText = bracketed[2] ?? '';
  } else {
    const colon = s.lastIndexOf(':');
    // IPv6 without brackets needs the prefix length before the port.
    if (colon < 0 || (s.indexOf(':') !== colon && !s.slice(0, colon).includes('/'))) bad(spec, 'no port');
    cidrText = s.slice(0, colon);
    portText = s.slice(colon + 1);
  }
  const cidr = parseCidr(cidrText, spec);
  const [portMin, portMax] = parsePortRange(portText, spec);
  const ports = portMin === 1 && portMax === 65535 ? '*' : portMin === portMax ? String(portMin) : `${portMin}-${portMax}`;
  const prefix = `${cidr.address}/${cidr.prefixLength}`;
  return {
    ...cidr,
    portMin,
    portMax,
    text: cidr.family === 'ipv6' ? `[${prefix}]:${ports}` : `${prefix}:${ports}`,
  };
}
