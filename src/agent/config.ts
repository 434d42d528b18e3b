/**
 * The agent's configuration file, YAML or JSON (JSON is read as YAML, of
 * which it is a subset), checked with zod. An error names the field and
 * the line it is on. The JSON Schema published in deploy/ is made from the
 * same zod schema (configJsonSchema).
 */
import fs from 'node:fs';
import { LineCounter, parseDocument, isNode, type Document } from 'yaml';
import { z } from 'zod';
import { zodToJsonSchema } from 'zod-to-json-schema';
import { FastPathInput, InterceptInput } from '../attachment/spec.js';
import { AccelError, ErrorCodes } from '../errors.js';
import { compileGlob } from './glob.js';

/** `key` (present) or `key=value`. */
const selectorText = z.string().regex(/^[A-Za-z0-9./_-]+(=[^=]*)?$/, 'expected key or key=value');

const Selection = z
  .object({
    /** Names the selection in logs, events and metrics. */
    name: z.string().regex(/^[a-z0-9][a-z0-9-]*$/, 'lower case letters, digits and dashes'),
    /** Cgroup paths relative to cgroupRoot, as globs (src/agent/glob.ts). */
    cgroups: z
      .array(
        z.string().superRefine((g, ctx) => {
          try {
            compileGlob(g);
          } catch (err) {
            ctx.addIssue({ code: z.ZodIssueCode.custom, message: (err as Error).message });
          }
        }),
      )
      .optional(),
    /** Pods of this node (kubernetes.enabled) whose annotation or label matches. */
    pods: z
      .object({ annotation: selectorText.optional(), label: selectorText.optional() })
      .strict()
      .refine((p) => p.annotation !== undefined || p.label !== undefined, 'give annotation, label or both')
      .optional(),
    fastPath: FastPathInput.default({}),
    intercept: InterceptInput.nullable().default(null),
  })
  .strict()
  .refine((s) => (s.cgroups !== undefined) !== (s.pods !== undefined), 'give either cgroups or pods');

export const AgentConfigSchema = z
  .object({
    /** Where the globs start and pod cgroups are looked for: the cgroup2 mount if not given. */
    cgroupRoot: z.string().startsWith('/').optional(),
    /** How often the cgroup tree is scanned for new and removed cgroups. */
    pollIntervalMs: z.number().int().min(50).max(60_000).default(500),
    /** At most this many directories are visited in one scan. */
    maxScan: z.number().int().min(1).max(1_000_000).default(50_000),
    kubernetes: z
      .object({
        enabled: z.boolean().default(false),
        /** The node whose pods are watched; default: $NODE_NAME. */
        nodeName: z.string().min(1).optional(),
      })
      .strict()
      .default({}),
    /** In order: a cgroup takes the first selection that matches it. */
    selections: z.array(Selection).min(1),
  })
  .strict()
  .superRefine((c, ctx) => {
    const names = new Set<string>();
    for (const [i, s] of c.selections.entries()) {
      if (names.has(s.name)) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['selections', i, 'name'], message: `selection name "${s.name}" is used twice` });
      names.add(s.name);
      if (s.pods && !c.kubernetes.enabled) ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['selections', i, 'pods'], message: 'pod selections need kubernetes.enabled: true' });
    }
  });

export type AgentConfig = z.output<typeof AgentConfigSchema>;
export type SelectionConfig = AgentConfig['selections'][number];

/** The JSON Schema of the configuration file (deploy/agent-config.schema.json). */
export function configJsonSchema(): object {
  return zodToJsonSchema(AgentConfigSchema, { name: 'AccelAgentConfig', $refStrategy: 'none' });
}

/** Line (1-based) of the node at `path`, or of the nearest one above it. */
function lineOf(doc: Document, lines: LineCounter, path: (string | number)[]): number | null {
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (isNode(node) && node.range) return lines.linePos(node.range[0]).line;
  }
  return null;
}

/** Parse and check a configuration text; `source` names it in errors. */
export function parseAgentConfig(text: string, source: string): AgentConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true });
  const syntax = doc.errors[0];
  if (syntax) {
    const line = syntax.linePos?.[0]?.line;
    throw new AccelError(ErrorCodes.USAGE, `${source}${line ? `:${line}` : ''}: ${syntax.message.split('\n')[0]}`);
  }
  const r = AgentConfigSchema.safeParse(doc.toJS());
  if (!r.success) {
    const issue = r.error.issues[0] as z.ZodIssue;
    // An unknown key is pointed at itself, not at the object around it.
    const at = issue.code === z.ZodIssueCode.unrecognized_keys && issue.keys[0] !== undefined ? [...issue.path, issue.keys[0]] : issue.path;
    const line = lineOf(doc, lines, at);
    throw new AccelError(ErrorCodes.USAGE, `${source}${line ? `:${line}` : ''}: ${issue.path.join('.') || '(top level)'}: ${issue.message}`);
  }
  return r.data;
}

export function loadAgentConfig(file: string): AgentConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new AccelError(ErrorCodes.USAGE, `cannot read the agent configuration ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return parseAgentConfig(text, file);
}
