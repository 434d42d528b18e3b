/** Running the built CLI for the tests in this folder: never throws, and
 * never loads a program (each test uses only arguments that fail or read). */
import { execFile } from 'node:child_process';
import { CLI_ENTRY } from '../../src/paths.js';

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

export function cli(args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI_ENTRY, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      const status = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ status, stdout, stderr });
    });
  });
}
