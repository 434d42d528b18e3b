/**
 * What one cgroup's attachment is asked to be: the input of a reconcile.
 * `accel attach` builds one from its options; a node agent will build them
 * from the workloads it follows. Parsed with zod, so a spec from a file or
 * an API gets the same checks as one from the command line.
 */
import { z } from 'zod';
import { AccelError, ErrorCodes } from '../errors.js';
import type { FastPathSpec } from '../fastpath/install.js';
import { DEFAULT_MAX_SOCKETS, DEFAULT_QUEUE_LIMIT } from '../fastpath/objects.js';
import { parseInterceptRule } from '../net/rules.js';
import { INTERCEPT_DEFAULTS, type InterceptSettings } from '../intercept/settings.js';

const port = z.number().int().min(1).max(65535);
const u32 = z.number().int().min(0).max(0xffffffff);

export const FastPathInput = z
  .object({
    bypassPorts: z.array(port).default([]),
    queueLimit: z.number().int().min(0).max(0x7fffffff).default(DEFAULT_QUEUE_LIMIT),
    maxSockets: z
      .number()
      .int()
      .min(1)
      .max(1 << 24)
      .default(DEFAULT_MAX_SOCKETS),
    streamVerdict: z.enum(['auto', 'always']).default('auto'),
    selftest: z.boolean().default(true),
    acceptUnsafeReadersHostWide: z.boolean().default(false),
  })
  .strict();

export const InterceptInput = z
  .object({
    ifaces: z.array(z.string().min(1)).min(1),
    /** As users write them: CIDR:PORT, CIDR:PORT-PORT or CIDR:*. */
    rules: z.array(z.string()).min(1),
    proxyPort: port,
    interceptMark: u32.default(INTERCEPT_DEFAULTS.interceptMark),
    proxyMark: u32.default(INTERCEPT_DEFAULTS.proxyMark),
    table: u32.default(INTERCEPT_DEFAULTS.table),
    priority: u32.default(INTERCEPT_DEFAULTS.priority),
    maxFlows: z
      .number()
      .int()
      .min(1)
      .max(1 << 24)
      .default(INTERCEPT_DEFAULTS.maxFlows),
    proxyPid: z.number().int().min(1).nullable().default(null),
    udp: z.enum(['pass', 'refuse']).default(INTERCEPT_DEFAULTS.udp),
  })
  .strict();

export const AttachmentSpecInput = z
  .object({
    cgroup: z.string().min(1),
    fastPath: FastPathInput.default({}),
    intercept: InterceptInput.nullable().default(null),
  })
  .strict();

export type AttachmentSpecInput = z.input<typeof AttachmentSpecInput>;

export interface AttachmentSpec {
  cgroup: string;
  fastPath: FastPathSpec;
  intercept: InterceptSettings | null;
}

/** Check and normalise a spec (ports sorted and unique, rules parsed):
 * two specs that mean the same compare equal. Bad input is E_USAGE. */
export function parseSpec(input: unknown): AttachmentSpec {
  const r = AttachmentSpecInput.safeParse(input);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new AccelError(ErrorCodes.USAGE, `invalid attachment spec: ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`);
  }
  const { cgroup, fastPath, intercept } = r.data;
  return {
    cgroup,
    fastPath: { ...fastPath, bypassPorts: [...new Set(fastPath.bypassPorts)].sort((a, b) => a - b) },
    intercept: intercept && {
      ifaces: [...new Set(intercept.ifaces)],
      rules: intercept.rules.map(parseInterceptRule),
      proxyPort: intercept.proxyPort,
      interceptMark: intercept.interceptMark,
      proxyMark: intercept.proxyMark,
      table: intercept.table,
      priority: intercept.priority,
      maxFlows: intercept.maxFlows,
      proxyPid: intercept.proxyPid,
      udp: intercept.udp,
    },
  };
}
