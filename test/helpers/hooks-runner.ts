// src/intercept/hooks.ts driven from the command line, so that a test can run
// it inside a network namespace (nsenter): `node hooks-runner.js OP JSON`
// prints {"ok":true,"value":...} or {"ok":false,"code":...,"message":...}.
// OP: mode | attach (a HookSpec) | detach, present (a HookRecord) |
// programs ({dev, direction}: the kernel's list of tcx programs there).
// Without arguments (as the test runner may start it) it does nothing.
import { tcxProgramIds } from '../../src/bpf/attach.js';
import { isAccelError } from '../../src/errors.js';
import { type HookDirection, type HookRecord, type HookSpec, attachHook, detachHook, hookPresent, tcMode } from '../../src/intercept/hooks.js';
import { interfaceIndex } from '../../src/net/iproute.js';

async function perform(op: string, arg: unknown): Promise<unknown> {
  switch (op) {
    case 'mode':
      return tcMode();
    case 'attach':
      return attachHook(arg as HookSpec);
    case 'detach':
      return detachHook(arg as HookRecord);
    case 'present':
      return hookPresent(arg as HookRecord);
    case 'programs': {
      const { dev, direction } = arg as { dev: string; direction: HookDirection };
      return tcxProgramIds(await interfaceIndex(dev), direction);
    }
    default:
      throw new Error(`unknown operation ${op}`);
  }
}

const [op, json] = process.argv.slice(2);
if (op) {
  try {
    const value = await perform(op, json ? JSON.parse(json) : undefined);
    process.stdout.write(`${JSON.stringify({ ok: true, value: value ?? null })}\n`);
  } catch (err) {
    const code = isAccelError(err) ? err.code : 'unexpected';
    process.stdout.write(`${JSON.stringify({ ok: false, code, message: (err as Error).message })}\n`);
  }
}
