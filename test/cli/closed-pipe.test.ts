// A command whose reader has gone (`accel features | head -3`) ends quietly,
// as `git log | head` does: no stack trace, no error line, the status of a
// process killed by SIGPIPE. The pipe's read end is closed before the CLI
// writes a byte, so every write it makes fails with EPIPE.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import { CLOSED_PIPE_STATUS, endQuietlyOnClosedOutput } from '../../src/cli/exit.js';
import { CLI_ENTRY } from '../../src/paths.js';

function withClosedStdout(args: string[]): Promise<{ status: number | null; signal: string | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_ENTRY, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    // Closed at once: Node takes tens of milliseconds to start, so no byte
    // can be written before the reader is gone.
    child.stdout.destroy();
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stderr });
    });
  });
}

describe('a closed stdout', () => {
  for (const args of [['--help'], ['--version'], ['attach', '--help']]) {
    it(`accel ${args.join(' ')}: ends quietly with status ${CLOSED_PIPE_STATUS}`, async () => {
      const r = await withClosedStdout(args);
      assert.equal(r.stderr, '', 'nothing on stderr (no stack trace, no error line)');
      assert.equal(r.signal, null);
      assert.equal(r.status, CLOSED_PIPE_STATUS);
    });
  }

  it('any other error of stdout still surfaces; a closed stderr is ignored (the command goes on)', () => {
    const streams = { stdout: new EventEmitter(), stderr: new EventEmitter() };
    const exits: number[] = [];
    endQuietlyOnClosedOutput(streams, (s) => exits.push(s));
    const err = (code: string) => Object.assign(new Error(code), { code });
    streams.stderr.emit('error', err('EPIPE'));
    assert.deepEqual(exits, []);
    assert.throws(() => streams.stdout.emit('error', err('EIO')), /EIO/);
    assert.throws(() => streams.stderr.emit('error', err('ENOSPC')), /ENOSPC/);
    streams.stdout.emit('error', err('EPIPE'));
    assert.deepEqual(exits, [CLOSED_PIPE_STATUS]);
  });
});
