/** Long-running commands (proxy, echo, relay): a readiness line on stdout,
 * then run until SIGTERM/SIGINT, stop gracefully, print the final stats. */
import { log } from '../log.js';
import { print } from './output.js';

export async function serveUntilSignal(ready: Record<string, unknown>, stop: () => Promise<void>, graceMs: number, stats: () => unknown): Promise<void> {
  print(JSON.stringify({ event: 'listening', ...ready, pid: process.pid }));
  await new Promise<void>((resolve) => {
    const onSignal = (signal: string) => {
      log.info(`${signal}: no new connections; open ones get ${graceMs} ms`);
      void stop().then(resolve);
    };
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    process.once('SIGINT', () => onSignal('SIGINT'));
  });
  print(JSON.stringify({ event: 'stopped', stats: stats() }));
}
