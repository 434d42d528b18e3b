/**
 * The kernel's own verdict on a test run: WARNING, BUG, Oops or general
 * protection reports, logged since the run started, that involve the
 * sockmap code accel drives (tcp_bpf, sk_psock, sock_map, skmsg). A report
 * runs from its first line to the "---[ end trace" line; it counts when any
 * of its lines (the location, the call trace) names that code. Reports
 * about anything else are another subsystem's business.
 */
const START = /\b(WARNING|BUG|Oops|general protection fault)\b/;
const END = /---\[ end trace/;
const OURS = /\b(tcp_bpf|sk_psock|sock_map|sockmap|skmsg)/;

/** `lines`: `dmesg --kernel` output, each line "[seconds] text". */
export function sockmapTrouble(lines: string[], sinceSeconds: number): string[][] {
  const reports: string[][] = [];
  let current: string[] | null = null;
  for (const line of lines) {
    const m = /^\[\s*(\d+\.\d+)\]\s?(.*)$/.exec(line);
    if (!m || Number(m[1]) < sinceSeconds) continue;
    const text = m[2] ?? '';
    if (START.test(text)) {
      if (current) reports.push(current);
      current = [text];
    } else if (current) {
      current.push(text);
      if (END.test(text)) {
        reports.push(current);
        current = null;
      }
    }
  }
  if (current) reports.push(current);
  return reports.filter((r) => r.some((l) => OURS.test(l)));
}
