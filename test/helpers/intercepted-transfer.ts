// An intercepted connection (application -> tc -> accel proxy -> server at
// its real address) transferring both ways, paced, while a test upgrades or
// restarts what runs it; then every byte checked. Shared by the upgrade and
// agent tests.
import assert from 'node:assert/strict';
import { withTproxyMaps } from '../../src/intercept/maps.js';
import { SOCKPROBE, attachmentPinDir } from '../../src/paths.js';
import { type ProbeResult, parseProbeOutput } from '../../src/probe/sockprobe.js';
import { spawn } from '../../src/proc/run.js';
import { BPFFS, MB, stopProcess, waitFor } from './env.js';
import { type InterceptBench, PROBE_PORT, SERVER4 } from './intercept.js';

/** About 3 s at the pace below (the default size). */
export const INTERCEPTED_TRANSFER = 96 * MB;

export const flows = (b: InterceptBench) => withTproxyMaps(attachmentPinDir(BPFFS, b.cg.id), (m) => m.flows().length);

/** An intercepted connection transferring both ways, paced (a few seconds):
 * a sockprobe client in the application's place to a sockprobe server at
 * the remote's real address, through the proxy. Running once this returns
 * (its flow is in the map), and until interceptedByteExact: the client
 * keeps its last 64 KiB until then (--hold-end), so the connection spans a
 * test's steps however long they take on a busy machine, and its last bytes
 * cross after them. */
export interface InterceptedTransfer {
  /** Bytes each way. */
  bytes: number;
  result: Promise<ProbeResult>;
  /** Let the client send its last bytes. */
  release: () => void;
}

export async function interceptedTransfer(t: { after: (fn: () => Promise<void>) => void }, b: InterceptBench, bytes = INTERCEPTED_TRANSFER): Promise<InterceptedTransfer> {
  // A reader waits for the held last bytes as long as a test's steps take.
  const paced = ['--duplex', '--bytes', String(bytes), '--back', String(bytes), '--sizes', '65536', '--pace-us', '2000', '--stall-ms', '60000'];
  const server = spawn(SOCKPROBE, ['server', '--family', '6', '--port', String(PROBE_PORT), ...paced], { netns: b.remote });
  t.after(() => stopProcess(server));
  assert.ok(await server.waitForLine((l) => l.includes('"event":"listening"')), 'the sockprobe server listens');
  const flowsBefore = flows(b);
  const client = spawn(SOCKPROBE, ['client', '--host', SERVER4, '--port', String(PROBE_PORT), '--reader', 'epoll', '--hold-end', ...paced], b.appWhere);
  t.after(() => stopProcess(client));
  const result = Promise.all([server.done, client.done]).then(([s, c]) => {
    const srv = parseProbeOutput(s.stdout, s.exitCode, s.stderr);
    const cli = parseProbeOutput(c.stdout, c.exitCode, c.stderr);
    const ok = srv.ok && cli.ok;
    return { ok, sides: [...srv.sides, ...cli.sides], error: ok ? null : (srv.error ?? cli.error), stderr: srv.stderr + cli.stderr };
  });
  assert.ok(await waitFor(() => flows(b) > flowsBefore, 10_000), 'the connection was intercepted (its flow is in the map)');
  return { bytes, result, release: () => client.write('\n') };
}

/** Let it finish; then every byte both ways, none reset, and through the
 * proxy. */
export async function interceptedByteExact(b: InterceptBench, transfer: InterceptedTransfer): Promise<void> {
  transfer.release();
  const r = await transfer.result;
  assert.ok(r.ok, r.error ?? '');
  assert.deepEqual(
    r.sides.map((s) => s.received),
    [transfer.bytes, transfer.bytes],
    'every byte arrived (sockprobe checks each against the stream)',
  );
  assert.ok(
    r.sides.every((s) => !s.reset),
    'none reset',
  );
  assert.ok(await waitFor(() => b.proxyEvents().some((e) => e.destination === `${SERVER4}:${PROBE_PORT}`), 5000), 'through the proxy');
}
