// The one exit handler, in process: what each kind of failure prints, where,
// and the status it returns.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CommanderError } from 'commander';
import { reportError } from '../../src/cli/exit.js';
import { AccelError, ErrorCodes } from '../../src/errors.js';

/** reportError with stdout and stderr captured (it writes synchronously). */
function report(err: unknown, json: boolean): { status: number; stdout: string; stderr: string } {
  const out: string[] = [];
  const errs: string[] = [];
  const write = { out: process.stdout.write, err: process.stderr.write };
  process.stdout.write = ((s: string) => out.push(s) > 0) as typeof process.stdout.write;
  process.stderr.write = ((s: string) => errs.push(s) > 0) as typeof process.stderr.write;
  try {
    const status = reportError(err, json);
    return { status, stdout: out.join(''), stderr: errs.join('') };
  } finally {
    process.stdout.write = write.out;
    process.stderr.write = write.err;
  }
}

describe('exit handler', () => {
  const refused = new AccelError(ErrorCodes.PERMISSION, 'cannot open the pins', { errno: 'EACCES' });

  it('an AccelError: one line on stderr, the status of its code', () => {
    assert.deepEqual(report(refused, false), { status: 3, stdout: '', stderr: 'accel: cannot open the pins [E_PERMISSION]\n' });
  });

  it('under --json: one object on stdout with code, message and errno', () => {
    const r = report(refused, true);
    assert.equal(r.status, 3);
    assert.equal(r.stderr, '');
    assert.deepEqual(JSON.parse(r.stdout), { code: 'E_PERMISSION', message: 'cannot open the pins', errno: 'EACCES' });
  });

  it("under --json a failing command's result goes out with the error, as one object", () => {
    const err = new AccelError(ErrorCodes.VERIFY, 'not engaged', { result: { reports: [{ bytesRedirected: 0n }] } });
    const r = report(err, true);
    assert.equal(r.status, 4);
    assert.deepEqual(JSON.parse(r.stdout), { reports: [{ bytesRedirected: '0' }], code: 'E_VERIFY', message: 'not engaged' });
    assert.equal(report(err, false).stderr, 'accel: not engaged [E_VERIFY]\n');
  });

  it("commander's usage errors are E_USAGE, status 2, without commander's prefix", () => {
    const err = new CommanderError(1, 'commander.unknownOption', "error: unknown option '--bogus'");
    assert.deepEqual(report(err, false), { status: 2, stdout: '', stderr: "accel: unknown option '--bogus' [E_USAGE]\n" });
  });

  it('--help and --version end in a CommanderError with status 0: nothing more is printed', () => {
    assert.deepEqual(report(new CommanderError(0, 'commander.version', '0.1.0'), true), { status: 0, stdout: '', stderr: '' });
    assert.deepEqual(report(new CommanderError(0, 'commander.helpDisplayed', '(outputHelp)'), false), { status: 0, stdout: '', stderr: '' });
  });

  it('anything else is an internal error, status 1', () => {
    assert.deepEqual(report(new TypeError('x is undefined'), false), { status: 1, stdout: '', stderr: 'accel: internal error: x is undefined [E_INTERNAL]\n' });
    assert.deepEqual(JSON.parse(report(new TypeError('x is undefined'), true).stdout), { code: 'E_INTERNAL', message: 'internal error: x is undefined' });
  });
});
