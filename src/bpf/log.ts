/**
 * Routes libbpf's own messages (verifier logs, warnings) into a callback,
 * formatting its printf-style va_list with libc's vsnprintf.
 */
import { PrintFn, bpf, koffi, libcFns } from './native.js';

export type LibbpfLevel = 'warn' | 'info' | 'debug';
export type LibbpfSink = (level: LibbpfLevel, message: string) => void;

const LEVELS: LibbpfLevel[] = ['warn', 'info', 'debug'];
let registered: unknown = null;
let sink: LibbpfSink = () => {};
const buf = Buffer.alloc(8192);

/** Install the sink (idempotent: one koffi callback for the process). */
export function routeLibbpfLogs(target: LibbpfSink): void {
  sink = target;
  if (registered) return;
  registered = koffi.register((level: number, fmt: string, ap: unknown) => {
    const n = libcFns.vsnprintf(buf, buf.length, fmt, ap) as number;
    const text = buf
      .subarray(0, Math.max(0, Math.min(n, buf.length - 1)))
      .toString('utf8')
      .trimEnd();
    if (text) sink(LEVELS[level] ?? 'debug', text);
    return 0;
  }, koffi.pointer(PrintFn));
  bpf.set_print(registered);
}
