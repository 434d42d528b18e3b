/** Long-running commands (proxy, echo, relay): a readiness line on stdout,
 * then run until SIGTERM/SIGINT, stop gracefully, print the final stats. */
import { log } from '../log.js';
import { print } from './output.js';

export async function serveUntilSignal(ready: Record<string, unknown>, stop: () => Promise<void>, graceMs: number, stats: () => unknown): Promise<void> {
  print(JSON.stringify({ event: 'listening', ...ready, pid: process.pid }));
  // Not once(): a listener must stay while the server stops. execa
  // (signal-exit) re-raises a signal no other listener is left to handle,
  // which would cut the grace time short.
  let stopping: Promise<void> | null = null;
  let onSignal: (signal: NodeJS.Signals) => void = () => {};
  await new Promise<void>((resolve, reject) => {
    onSignal = (signal) => {
      if (stopping) return;
      log.info(`${signal}: no new connections; open ones get ${graceMs} ms`);
      stopping = stop().then(resolve, reject);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
  print(JSON.stringify({ event: 'stopped', stats: stats() }));
}
