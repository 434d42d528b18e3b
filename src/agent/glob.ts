/**
 * Globs over cgroup paths relative to the agent's cgroup root, segment by
 * segment: `*` and `?` stay within one path segment, `**` is any number of
 * whole segments (none too), `{a,b}` is either, `[...]` a character class.
 * A glob also says which directories can lead to a match, so the scan of
 * the cgroup tree descends into those only.
 */

export interface CgroupGlob {
  text: string;
  /** Matches a whole relative path. */
  regex: RegExp;
  /** One regex per segment; null for a `**` segment. */
  segments: (RegExp | null)[];
}

function segmentSource(seg: string): string {
  let out = '';
  for (let i = 0; i < seg.length; i++) {
    const c = seg[i] as string;
    if (c === '*') out += '[^/]*';
    else if (c === '?') out += '[^/]';
    else if (c === '[') {
      const end = seg.indexOf(']', i + 2);
      if (end < 0) throw new Error(`unclosed [ in "${seg}"`);
      const body = seg
        .slice(i + 1, end)
        .replace(/^!/, '^')
        .replace(/\\/g, '\\\\');
      out += `[${body}]`;
      i = end;
    } else if (c === '{') {
      const end = seg.indexOf('}', i);
      if (end < 0) throw new Error(`unclosed { in "${seg}"`);
      out += `(?:${seg
        .slice(i + 1, end)
        .split(',')
        .map((alt) => segmentSource(alt))
        .join('|')})`;
      i = end;
    } else out += c.replace(/[.+^$()|\\/]/g, '\\$&');
  }
  return out;
}

/** Compile a glob; a bad one throws an Error naming what is wrong. */
export function compileGlob(text: string): CgroupGlob {
  const parts = text.replace(/^\/+|\/+$/g, '').split('/');
  if (!parts.length || parts.some((p) => p === '' || p === '.' || p === '..')) throw new Error(`"${text}" is not a relative cgroup path glob (no empty, . or .. segments)`);
  let source = '';
  for (const [i, p] of parts.entries()) {
    const last = i === parts.length - 1;
    if (p === '**') source += last ? (i === 0 ? '[^/]+(?:/[^/]+)*' : '(?:/[^/]+)*') : i === 0 ? '(?:[^/]+/)*' : '(?:/[^/]+)*/';
    else source += (i === 0 || parts[i - 1] === '**' ? '' : '/') + segmentSource(p);
  }
  return { text, regex: new RegExp(`^${source}$`), segments: parts.map((p) => (p === '**' ? null : new RegExp(`^${segmentSource(p)}$`))) };
}

/**
 * Can a directory whose relative path has these segments, or one below
 * it, match the glob? Every segment before the first `**` must match its
 * own; without `**`, no deeper than the glob.
 */
export function mayLeadTo(glob: CgroupGlob, dirSegments: string[]): boolean {
  const star = glob.segments.indexOf(null);
  const fixed = star < 0 ? glob.segments.length : star;
  if (star < 0 && dirSegments.length >= glob.segments.length) return false;
  for (let i = 0; i < Math.min(fixed, dirSegments.length); i++) if (!(glob.segments[i] as RegExp).test(dirSegments[i] as string)) return false;
  return true;
}
