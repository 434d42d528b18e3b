/**
 * The agent's HTTP endpoints: /metrics (Prometheus text format), /healthz
 * (the reconcile loop is running) and /readyz (everything selected has
 * been reconciled once). Loopback only unless told otherwise.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { AccelError, ErrorCodes } from '../errors.js';
import { log } from '../log.js';
import type { Registry } from 'prom-client';

/** Where each endpoint is served (the DaemonSet's probes use them). */
export const ENDPOINT_PATHS = { metrics: '/metrics', health: '/healthz', ready: '/readyz' } as const;

export interface Endpoints {
  metrics: Registry;
  refresh(): Promise<void>;
  /** After each scrape (served or failed): drop what refresh read. */
  release?(): void;
  /** null: healthy; otherwise why not. */
  unhealthy(): string | null;
  ready(): boolean;
}

/** host:port, [v6]:port. */
export function parseListenAddress(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new AccelError(ErrorCodes.USAGE, `"${text}" is not HOST:PORT (e.g. 127.0.0.1:9477 or [::1]:9477; port 0 picks one)`);
  return { host: (m[1] ?? m[2]) as string, port };
}

export async function serveEndpoints(address: string, e: Endpoints): Promise<{ address: string; close(): Promise<void> }> {
  const { host, port } = parseListenAddress(address);
  const server = http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(status, { 'content-type': type });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'GET only\n');
    if (url === ENDPOINT_PATHS.metrics) {
      e.refresh()
        .then(() => e.metrics.metrics())
        .then(
          (text) => send(200, text, e.metrics.contentType),
          (err: unknown) => {
            log.error(`/metrics: ${(err as Error).message}`);
            send(500, `${(err as Error).message}\n`);
          },
        )
        .finally(() => e.release?.());
      return;
    }
    if (url === ENDPOINT_PATHS.health) {
      const why = e.unhealthy();
      return why ? send(503, `${why}\n`) : send(200, 'ok\n');
    }
    if (url === ENDPOINT_PATHS.ready) return e.ready() ? send(200, 'ready\n') : send(503, 'not ready: the first reconcile has not finished\n');
    return send(404, 'not found: /metrics, /healthz, /readyz\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'EADDRINUSE'
          ? new AccelError(ErrorCodes.ADDRESS_IN_USE, `metrics address ${address} is in use`)
          : new AccelError(ErrorCodes.USAGE, `cannot listen on ${address}: ${err.message}`),
      ),
    );
    server.listen(port, host, () => resolve());
  });
  const a = server.address() as AddressInfo;
  return {
    address: a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
