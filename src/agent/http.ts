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
  /** After a metric family's text is made: its series may be dropped. */
  written?(name: string): void;
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

/** A scraper that stops reading is cut off after this long. */
const STALLED_SCRAPE_MS = 30_000;

/** Until what was written is sent, or the connection is gone: a scraper
 * that reads nothing for STALLED_SCRAPE_MS is cut off, so that it holds
 * neither the scrape's series nor the server's close. */
function drained(res: http.ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => res.destroy(), STALLED_SCRAPE_MS);
    const done = () => {
      clearTimeout(timer);
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/**
 * The registry's exposition, as Registry.metrics() makes it, written one
 * metric family at a time: a family's series are made, sent and dropped
 * before the next one's, so that a scrape of a thousand attachments (some
 * 18,000 series) never holds them all, nor their text in one string.
 */
async function writeExposition(res: http.ServerResponse, e: Endpoints): Promise<void> {
  const registry = e.metrics;
  try {
    let first = true;
    for (const { name } of registry.getMetricsAsArray()) {
      const text = await registry.getSingleMetricAsString(name);
      e.written?.(name);
      if (res.destroyed) return;
      if (first) res.writeHead(200, { 'content-type': registry.contentType });
      if (!res.write(first ? text : `\n\n${text}`)) await drained(res);
      first = false;
    }
    if (first) res.writeHead(200, { 'content-type': registry.contentType });
    res.end('\n');
  } catch (err) {
    log.error(`/metrics: ${(err as Error).message}`);
    // Sent in part: the scraper sees the connection cut, not a short page.
    if (res.headersSent) res.destroy();
    else {
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`${(err as Error).message}\n`);
    }
  }
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
        .then(
          () => writeExposition(res, e),
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
