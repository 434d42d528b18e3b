/**
 * A BPF object file opened and loaded through libbpf, with its programs and
 * maps. Objects share maps by name: a map given in `reuseMaps` is not created
 * again, the object uses the existing one.
 */
import fs from 'node:fs';
import { AccelError, ErrorCodes } from '../errors.js';
import { describeErrno, errnoName } from './errno.js';
import { type Handle, bpf, lastErrno } from './native.js';

export interface LoadOptions {
  /** Map name -> fd of an existing map to use instead of creating one. */
  reuseMaps?: Record<string, number>;
  /** Map name -> how many entries the map this object creates may hold
   * (instead of the size in the object). */
  maxEntries?: Record<string, number>;
}

export class BpfObject {
  private handle: Handle | null;
  readonly path: string;

  private constructor(handle: Handle, path: string) {
    this.handle = handle;
    this.path = path;
  }

  /** Open and load `path`. Throws E_BPF_OBJECT for a missing or unreadable
   * object, E_BPF_LOAD when the kernel refuses it. */
  static load(path: string, options: LoadOptions = {}): BpfObject {
    if (!fs.existsSync(path)) {
      throw new AccelError(ErrorCodes.BPF_OBJECT, `BPF object ${path} is missing (run npm run build)`);
    }
    const handle = bpf.open_file(path, null);
    if (!handle) {
      const errno = lastErrno();
      throw new AccelError(ErrorCodes.BPF_OBJECT, `BPF object ${path} is not a valid BPF ELF object: ${describeErrno(errno)} (--log-level verbose shows libbpf's log)`, {
        errno: errnoName(errno),
      });
    }
    const obj = new BpfObject(handle, path);
    try {
      if (options.reuseMaps) obj.reuseMaps(options.reuseMaps);
      if (options.maxEntries) obj.setMaxEntries(options.maxEntries);
      const rc = bpf.object_load(handle) as number;
      if (rc < 0) {
        throw new AccelError(ErrorCodes.BPF_LOAD, `the kernel refused ${path}: ${describeErrno(-rc)} (--log-level verbose shows libbpf's log)`, {
          errno: errnoName(-rc),
        });
      }
    } catch (err) {
      obj.close();
      throw err;
    }
    return obj;
  }

  private get h(): Handle {
    if (!this.handle) throw new AccelError(ErrorCodes.INTERNAL, `BPF object ${this.path} used after close`);
    return this.handle;
  }

  private reuseMaps(fds: Record<string, number>): void {
    for (let map = bpf.next_map(this.h, null); map; map = bpf.next_map(this.h, map)) {
      const name = bpf.map_name(map) as string;
      const fd = fds[name];
      if (fd === undefined || bpf.map_is_internal(map)) continue;
      const rc = bpf.map_reuse_fd(map, fd) as number;
      if (rc < 0) throw new AccelError(ErrorCodes.BPF_MAP, `cannot share map ${name} with ${this.path}: ${describeErrno(-rc)}`);
    }
  }

  private setMaxEntries(sizes: Record<string, number>): void {
    for (const [name, n] of Object.entries(sizes)) {
      const map = bpf.find_map(this.h, name);
      if (!map) throw new AccelError(ErrorCodes.BPF_OBJECT, `BPF object ${this.path} has no map ${name}`);
      const rc = bpf.map_set_max_entries(map, n) as number;
      if (rc < 0) throw new AccelError(ErrorCodes.BPF_MAP, `cannot size map ${name} to ${n}: ${describeErrno(-rc)}`);
    }
  }

  /** Names and fds of the object's own (non-internal) maps. */
  maps(): Record<string, number> {
    const out: Record<string, number> = {};
    for (let map = bpf.next_map(this.h, null); map; map = bpf.next_map(this.h, map)) {
      if (!bpf.map_is_internal(map)) out[bpf.map_name(map) as string] = bpf.map_fd(map) as number;
    }
    return out;
  }

  programFd(name: string): number {
    return bpf.program_fd(this.program(name)) as number;
  }

  program(name: string): Handle {
    const prog = bpf.find_program(this.h, name);
    if (!prog) throw new AccelError(ErrorCodes.BPF_OBJECT, `BPF object ${this.path} has no program ${name}`);
    return prog;
  }

  mapFd(name: string): number {
    const map = bpf.find_map(this.h, name);
    if (!map) throw new AccelError(ErrorCodes.BPF_OBJECT, `BPF object ${this.path} has no map ${name}`);
    return bpf.map_fd(map) as number;
  }

  /** Unloads what nothing else holds (pins, attachments keep theirs). */
  close(): void {
    if (this.handle) bpf.object_close(this.handle);
    this.handle = null;
  }
}
