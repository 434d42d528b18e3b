/**
 * The attachments this node's agent made, /run/accel/agent-owned.json, so
 * that a restarted agent also cleans up those whose cgroups were removed,
 * or that its configuration no longer selects, while it was down. An
 * attachment made by hand (accel attach) is not the agent's unless a
 * selection matches its cgroup.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ownedDir } from '../bpf/bpffs.js';
import { STATE_DIR } from '../paths.js';

export interface OwnedEntry {
  id: string;
  path: string;
  selection: string;
}

export const ownedRecordPath = () => path.join(STATE_DIR, 'agent-owned.json');

export function readOwned(): OwnedEntry[] {
  try {
    const r = JSON.parse(fs.readFileSync(ownedRecordPath(), 'utf8')) as { version: number; owned: OwnedEntry[] };
    return r.version === 1 && Array.isArray(r.owned) ? r.owned : [];
  } catch {
    return [];
  }
}

/** Atomic; no record when the agent owns nothing. */
export function writeOwned(entries: OwnedEntry[]): void {
  const file = ownedRecordPath();
  if (!entries.length) {
    fs.rmSync(file, { force: true });
    return;
  }
  ownedDir(STATE_DIR);
  fs.writeFileSync(`${file}.${process.pid}`, JSON.stringify({ version: 1, owned: entries }));
  fs.renameSync(`${file}.${process.pid}`, file);
}
