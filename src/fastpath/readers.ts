/**
 * Reader kinds that a kernel can break on the fast path while every other
 * reader keeps working: a splice(2) reader (an early end of stream), and a
 * blocking reader after its own half-close (a spurious EAGAIN). The
 * self-test runs a probe of each kind with its throwaway attachment; a kind
 * whose probe fails is unsafe on this kernel. That is a warning, not a
 * refusal: the fast path still attaches, and services that read that way
 * are kept off it with --bypass-port.
 *
 * Nothing here names a kernel version: the probe's outcome is the verdict,
 * so a kernel that fixes a defect passes its probe and the warning goes.
 * Pure: the probes are run by selftest.ts.
 */

export type ReaderKind = 'splice' | 'blocking-after-half-close';

export interface ReaderKindInfo {
  kind: ReaderKind;
  /** Who is affected, as a user would say it. */
  readers: string;
  /** What goes wrong for them on the fast path. */
  breaks: string;
  /** The kernel note, from the repository root. */
  docs: string;
  /** sockprobe runs of this kind (options after the subcommand); each runs
   * in every placement of the self-test. */
  probes: { name: string; args: string[] }[];
}

const MB = 1 << 20;

export const READER_KINDS: readonly ReaderKindInfo[] = [
  {
    kind: 'splice',
    readers: 'splice(2) readers',
    breaks: 'get an early end of stream',
    docs: 'docs/kernel-notes.md#splice2-readers-get-an-early-end-of-stream',
    probes: [{ name: 'splice(2) reader', args: ['--reader', 'splice', '--back-reader', 'splice', '--bytes', `${4 * MB}`, '--back', `${4 * MB}`] }],
  },
  {
    kind: 'blocking-after-half-close',
    readers: 'blocking readers after a half-close',
    breaks: 'get EAGAIN from a blocking read after their own shutdown(SHUT_WR)',
    docs: 'docs/kernel-notes.md#spurious-eagain-for-blocking-readers',
    probes: [
      {
        name: 'blocking reader of the reply after half-close',
        args: ['--reader', 'blocking', '--back-reader', 'blocking', '--bytes', `${MB}`, '--back', `${4 * MB}`],
      },
      // A reader already waiting in recv when its writer thread
      // half-closes (a relay with a thread per direction), for a reply that
      // takes 100 ms: the half-close wakes the reader with nothing queued.
      // It failed 100 of 100 runs on 6.18.44 (0 of 100 on plain TCP), where
      // the bulk reply above failed 1 of 20.
      {
        name: 'blocking reader waiting as its writer half-closes',
        args: ['--reader', 'blocking', '--back-reader', 'blocking', '--bytes', '1000', '--back', `${256 * 1024}`, '--read-at-half-close', '--reply-delay-ms', '100'],
      },
    ],
  },
];

export function readerKindInfo(kind: ReaderKind): ReaderKindInfo {
  const info = READER_KINDS.find((k) => k.kind === kind);
  if (!info) throw new Error(`unknown reader kind ${kind}`);
  return info;
}

/** What a failed probe saw, from sockprobe's error text. */
export type ReaderSymptom = 'premature EOF' | 'spurious EAGAIN' | 'stall' | 'wrong bytes' | 'reset' | 'error';

export function readerSymptom(error: string): ReaderSymptom {
  if (error.startsWith('premature EOF')) return 'premature EOF';
  if (error.startsWith('spurious EAGAIN')) return 'spurious EAGAIN';
  if (/stalled|timeout/.test(error)) return 'stall';
  if (/differs from the stream|received more than|other bytes|short read/.test(error)) return 'wrong bytes';
  if (/ECONNRESET|reset/i.test(error)) return 'reset';
  return 'error';
}

/** A check of the self-test, as far as reader kinds look at it. */
export interface ReaderCheck {
  name: string;
  ok: boolean;
  error: string | null;
  readerKind?: ReaderKind;
}

/** One reader kind on this kernel: safe, or unsafe with the first failure
 * seen (the check, with its placement, and the probe's error). */
export interface ReaderSafety {
  kind: ReaderKind;
  safe: boolean;
  check: string | null;
  error: string | null;
}

export interface UnsafeReader {
  kind: ReaderKind;
  symptom: ReaderSymptom;
  check: string;
  error: string;
}

/** Every reader kind's verdict from the checks that probed it; a kind no
 * check probed is left out (not tested is not safe). */
export function readerSafety(checks: readonly ReaderCheck[]): ReaderSafety[] {
  const out: ReaderSafety[] = [];
  for (const { kind } of READER_KINDS) {
    const mine = checks.filter((c) => c.readerKind === kind);
    if (!mine.length) continue;
    const failed = mine.find((c) => !c.ok);
    out.push({ kind, safe: !failed, check: failed?.name ?? null, error: failed ? (failed.error ?? 'failed') : null });
  }
  return out;
}

export function unsafeReaders(readers: readonly ReaderSafety[]): UnsafeReader[] {
  return readers
    .filter((r) => !r.safe)
    .map((r) => {
      const error = r.error ?? 'failed';
      return { kind: r.kind, symptom: readerSymptom(error), check: r.check ?? '', error };
    });
}
