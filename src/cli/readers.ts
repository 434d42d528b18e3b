/** The reader kinds a kernel breaks on the fast path, as attach, verify,
 * status and selftest print them: one line each, nothing when none is. */
import type { ReaderSafetyStatus } from '../attachment/selftest-record.js';
import { READER_KINDS, type UnsafeReader, readerKindInfo } from '../fastpath/readers.js';

export function unsafeReaderLines(unsafe: readonly UnsafeReader[], indent = ''): string[] {
  return unsafe.map((u) => {
    const info = readerKindInfo(u.kind);
    return (
      `${indent}warning: ${info.readers} ${info.breaks} on this kernel's fast path (self-test: ${u.error}); ` +
      `${info.remedy ?? 'keep such a service off it: --bypass-port <port of such a service>'} (${info.docs})`
    );
  });
}

/** One line when nobody knows which reader kinds are safe; none otherwise. */
export function readerSafetyUnknownLine(s: ReaderSafetyStatus, indent = ''): string[] {
  if (s.readerSafety.state === 'tested') return [];
  return [
    `${indent}reader safety unknown: ${s.readerSafety.why ?? 'not tested'}; accel selftest shows which reader kinds (${READER_KINDS.map((k) => k.readers).join(', ')}) this kernel breaks`,
  ];
}
