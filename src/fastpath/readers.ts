/**
 * Reader kinds that a kernel can break on the fast path while every other
 * reader keeps working: a splice(2) reader (an early end of stream), a
 * blocking reader after its own half-close (a spurious EAGAIN), and a
 * FIONREAD-sized reader whose writer is held back (FIONREAD 0). The
 * self-test runs a probe of each kind with its throwaway attachment; a kind
 * whose probe fails is unsafe on this kernel. That is a warning, not a
 * refusal: the fast path still attaches, and services that read that way
 * are kept off it with --bypass-port (or, for the last, attached with the
 * stream verdict). A kind may also be probed behind a held writer
 * (heldProbes), where its bytes arrive by TCP.
 *
 * Nothing here names a kernel version: the probe's outcome is the verdict,
 * so a kernel that fixes a defect passes its probe and the warning goes.
 * Pure: the probes are run by selftest.ts.
 */

export type ReaderKind = 'splice' | 'blocking-after-half-close' | 'fionread-behind-held-writer';

export interface ReaderKindInfo {
  kind: ReaderKind;
  /** Who is affected, as a user would say it. */
  readers: string;
  /** What goes wrong for them on the fast path. */
  breaks: string;
  /** The kernel note, from the repository root. */
  docs: string;
  /** What a user does about it (default: keep such services off the fast path). */
  remedy?: string;
  /** sockprobe runs of this kind (options after the subcommand); each runs
   * in every placement of the self-test. */
  probes: { name: string; args: string[] }[];
  /** Runs of this kind behind a held writer: the reader starts late, the
   * self-test's queue limit is small, so its writer is held back and the
   * bytes arrive by TCP. Only with both ends on the fast path (a crossing
   * connection is never held), and only while the kind's other probes
   * passed (once one failed, the verdict is in). */
  heldProbes: { name: string; args: string[] }[];
}

const MB = 1 << 20;

/** The self-test's queue limit while it runs probes behind a held writer:
 * small, so that a reader that starts late holds its writer back. */
export const HELD_QUEUE_LIMIT = 64 * 1024;

/** sockprobe options for a reader behind a held writer: 1 MiB (16 times
 * HELD_QUEUE_LIMIT) written while the reader sleeps 20 ms, so all but the
 * first queue limit's worth arrives by TCP. */
export const HELD_WRITER_ARGS: readonly string[] = ['--bytes', `${MB}`, '--back', `${64 * 1024}`, '--read-delay-ms', '20'];

export const READER_KINDS: readonly ReaderKindInfo[] = [
  {
    kind: 'splice',
    readers: 'splice(2) readers',
    breaks: 'get an early end of stream',
    docs: 'docs/kernel-notes.md#splice2-readers-get-an-early-end-of-stream',
    probes: [{ name: 'splice(2) reader', args: ['--reader', 'splice', '--back-reader', 'splice', '--bytes', `${4 * MB}`, '--back', `${4 * MB}`] }],
    // splice(2) reads the TCP queue, not the redirect queue: behind a held
    // writer it read the held bytes first ("byte 0 differs", plain setup)
    // or stalled (with the stream verdict) on 6.18.44.
    heldProbes: [{ name: 'splice(2) reader behind a held writer', args: ['--reader', 'splice', ...HELD_WRITER_ARGS] }],
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
    // A blocking reader behind a held writer is one of the self-test's
    // fatal checks (selftest.ts); the half-close is what breaks this kind.
    heldProbes: [],
  },
  {
    // Held bytes arrive by TCP, which FIONREAD does not count on kernels
    // with 929e30f93125 unless the stream verdict moves them to the psock.
    // The stream verdict fixes it, but costs bulk throughput about two
    // thirds on such kernels, for every service of the cgroup: a warning,
    // as for the kinds above, and the choice is the user's.
    kind: 'fionread-behind-held-writer',
    readers: 'FIONREAD-sized readers behind a held writer',
    breaks: 'see FIONREAD 0 with bytes to read once they fall a queue limit behind',
    docs: 'docs/kernel-notes.md#fionread-behind-a-held-writer',
    remedy: 'attach with --stream-verdict always (it counts them, at a cost in bulk throughput), or keep such a service off it: --bypass-port <port of such a service>',
    probes: [],
    heldProbes: [{ name: 'FIONREAD-sized reader behind a held writer', args: ['--reader', 'fionread', ...HELD_WRITER_ARGS] }],
  },
];

export function readerKindInfo(kind: ReaderKind): ReaderKindInfo {
  const info = READER_KINDS.find((k) => k.kind === kind);
  if (!info) throw new Error(`unknown reader kind ${kind}`);
  return info;
}

/** What a failed probe saw, from sockprobe's error text. */
export type ReaderSymptom = 'premature EOF' | 'spurious EAGAIN' | 'FIONREAD 0' | 'stall' | 'wrong bytes' | 'reset' | 'error';

export function readerSymptom(error: string): ReaderSymptom {
  if (error.startsWith('premature EOF')) return 'premature EOF';
  if (error.startsWith('spurious EAGAIN')) return 'spurious EAGAIN';
  if (error.startsWith('FIONREAD reported 0')) return 'FIONREAD 0';
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
