/**
 * The names the policy compares (TLS SNI, HTTP Host) in one canonical form:
 * ASCII, lower case, no port, no trailing dot. Anything else is no name at
 * all (undefined): a byte outside ASCII, a space or a control character must
 * never be folded into an ASCII name that a rule happens to match (Node's
 * 'ascii' decoding drops the high bit: \xe9nternal.test would read as
 * internal.test).
 */

const DNS_NAME = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;

/** A host name or address as given (no port); undefined unless well-formed. */
export function canonicalName(raw: string): string | undefined {
  if (raw.length === 0 || raw.length > 255) return undefined;
  if (DNS_NAME.test(raw)) return raw.toLowerCase().replace(/\.$/, '');
  if (raw.includes(':') && IPV6.test(raw)) return raw.toLowerCase();
  return undefined;
}

/** The name in an HTTP authority (`host`, `host:port`, `[v6]:port`), as the
 * Host header and an absolute-form URI carry it. Userinfo (`user@host`) is
 * refused: RFC 9110 deprecates it and parsers disagree on which part is the
 * host. */
export function nameOfAuthority(authority: string): string | undefined {
  let host = authority;
  let port = '';
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 0) return undefined;
    host = authority.slice(1, close);
    const rest = authority.slice(close + 1);
    if (rest && !rest.startsWith(':')) return undefined;
    port = rest.slice(1);
    if (!host.includes(':')) return undefined;
  } else {
    const colon = authority.indexOf(':');
    if (colon >= 0) {
      host = authority.slice(0, colon);
      port = authority.slice(colon + 1);
    }
    if (host.includes(':')) return undefined;
  }
  if (!/^\d{0,5}$/.test(port)) return undefined;
  return canonicalName(host);
}

/** The SNI host_name bytes as a name; latin1 keeps every byte visible so
 * canonicalName can refuse the non-ASCII ones. */
export function nameOfSni(bytes: Buffer): string | undefined {
  const raw = bytes.toString('latin1');
  // An SNI is a DNS name, never an address (RFC 6066, section 3).
  return DNS_NAME.test(raw) ? canonicalName(raw) : undefined;
}
