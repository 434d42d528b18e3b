/**
 * A BPF object file opened and loaded through libbpf, with its programs and
 * maps. Objects share maps by pinning them: a map the object marks
 * LIBBPF_PIN_BY_NAME is pinned by name under the pin root the object is
 * loaded with; the first object creates and pins it there, every later one
 * uses the pinned map. An object loaded without a pin root pins nothing.
 */
import fs from 'node:fs';
import { AccelError, ErrorCodes } from '../errors.js';
import { describeErrno, errnoName } from './errno.js';
import { closeFd, mapInfo, openPinned } from './fd.js';
import { type Handle, bpf, lastErrno, openOptions } from './native.js';

export interface LoadOptions {
  /**
   * bpffs directory (it must exist) the maps the object marks
   * LIBBPF_PIN_BY_NAME are pinned in, each under its name. One pinned there
   * already is used instead of creating one, provided it agrees with the
   * object's (type, key and value size, flags; its size is the pin's unless
   * `maxEntries` names it, which must then agree too); any other is created
   * and pinned by the load. Without a pin root no map is pinned.
   */
  pinRoot?: string;
  /** With pinRoot: every map the object pins must be pinned there already;
   * the load creates none (the object joins maps another object made),
   * except those named in `creates`. */
  pinnedOnly?: boolean;
  /** With pinnedOnly: the maps this object makes and pins itself when they
   * are not pinned yet. */
  creates?: string[];
  /** Without pinRoot: map name -> fd of an existing map to use instead of
   * creating one. */
  reuseMaps?: Record<string, number>;
  /** Map name -> how many entries the map this object creates may hold
   * (instead of the size in the object). */
  maxEntries?: Record<string, number>;
  /** With pinRoot: map name -> the full path a map the object pins by name
   * is pinned at instead of under the pin root (a map shared beyond one
   * pin root). pinnedOnly applies to it as well. */
  pinPaths?: Record<string, string>;
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
    if (options.pinRoot !== undefined && options.reuseMaps) {
      throw new AccelError(ErrorCodes.INTERNAL, `BPF object ${path}: maps are shared either by pin root or by fd, not both`);
    }
    const handle = bpf.open_file(path, options.pinRoot === undefined ? null : openOptions(options.pinRoot));
    if (!handle) {
      const errno = lastErrno();
      throw new AccelError(ErrorCodes.BPF_OBJECT, `BPF object ${path} is not a valid BPF ELF object: ${describeErrno(errno)} (--log-level verbose shows libbpf's log)`, {
        errno: errnoName(errno),
      });
    }
    const obj = new BpfObject(handle, path);
    try {
      if (options.pinRoot === undefined) obj.clearPinPaths();
      else {
        if (options.pinPaths) obj.setPinPaths(options.pinPaths);
        obj.checkPins(options.pinRoot, options.maxEntries ?? {}, options.pinnedOnly ? new Set(options.creates) : null);
      }
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

  /** libbpf gives every map marked for pinning a path under the default
   * root (/sys/fs/bpf) when no root is given: take them back. */
  private clearPinPaths(): void {
    for (let map = bpf.next_map(this.h, null); map; map = bpf.next_map(this.h, map)) {
      if (bpf.map_pin_path(map) === null) continue;
      const rc = bpf.map_set_pin_path(map, null) as number;
      if (rc < 0) throw new AccelError(ErrorCodes.BPF_MAP, `cannot clear the pin path of map ${bpf.map_name(map) as string} of ${this.path}: ${describeErrno(-rc)}`);
    }
  }

  private setPinPaths(paths: Record<string, string>): void {
    for (const [name, pinPath] of Object.entries(paths)) {
      const map = bpf.find_map(this.h, name);
      if (!map) throw new AccelError(ErrorCodes.BPF_OBJECT, `BPF object ${this.path} has no map ${name}`);
      if (bpf.map_pin_path(map) === null) throw new AccelError(ErrorCodes.BPF_OBJECT, `map ${name} of ${this.path} is not pinned by name`);
      const rc = bpf.map_set_pin_path(map, pinPath) as number;
      if (rc < 0) throw new AccelError(ErrorCodes.BPF_MAP, `cannot pin map ${name} of ${this.path} at ${pinPath}: ${describeErrno(-rc)}`);
    }
  }

  /**
   * The maps already pinned under the pin root, against the object's: a
   * pinned map's size becomes the object's (unless `sizes` names the map),
   * and a pinned map that disagrees otherwise is refused here, by name,
   * rather than by libbpf's EINVAL at load.
   */
  private checkPins(root: string, sizes: Record<string, number>, pinnedOnlyBut: Set<string> | null): void {
    const misfits = this.pinnedMisfits(root, sizes, pinnedOnlyBut);
    if (misfits.length) throw new AccelError(ErrorCodes.BPF_MAP, `${misfits.join('; ')} (pinned by another version of accel, or with other settings)`);
  }

  /** Each map pinned under the pin root that the object cannot use as it
   * is, one line each (and the pinned sizes taken over, as checkPins). */
  private pinnedMisfits(root: string, sizes: Record<string, number>, pinnedOnlyBut: Set<string> | null): string[] {
    const misfits: string[] = [];
    for (let map = bpf.next_map(this.h, null); map; map = bpf.next_map(this.h, map)) {
      const pinPath = bpf.map_pin_path(map) as string | null;
      if (pinPath === null) continue;
      const name = bpf.map_name(map) as string;
      const fd = openPinned(pinPath);
      if (fd === null) {
        if (pinnedOnlyBut && !pinnedOnlyBut.has(name))
          throw new AccelError(ErrorCodes.NOT_ATTACHED, `map ${name} is not pinned at ${pinPath} (${this.path} uses the maps pinned in ${root})`);
        continue;
      }
      let info;
      try {
        info = mapInfo(fd);
      } finally {
        closeFd(fd);
      }
      const size = sizes[name] ?? info.maxEntries;
      const ours = {
        type: bpf.map_type(map) as number,
        keySize: bpf.map_key_size(map) as number,
        valueSize: bpf.map_value_size(map) as number,
        flags: bpf.map_flags(map) as number,
        maxEntries: size,
      };
      const differ = (['type', 'keySize', 'valueSize', 'flags', 'maxEntries'] as const).filter((k) => ours[k] !== info[k]);
      if (differ.length) {
        misfits.push(`map ${name} pinned at ${pinPath} does not fit ${this.path}: ${differ.map((k) => `${k} ${info[k]}, not ${ours[k]}`).join('; ')}`);
        continue;
      }
      if (!(name in sizes) && (bpf.map_max_entries(map) as number) !== size) this.setMaxEntries({ [name]: size });
    }
    return misfits;
  }

  /**
   * Without loading anything: the maps pinned under `pinRoot` (and at
   * `pinPaths`) that the object at `path` could not use, one line each
   * (type, key or value size, flags or size differ). Maps not pinned yet
   * are not misfits. Opening an object touches no kernel state.
   */
  static pinnedMisfits(path: string, options: { pinRoot: string; pinPaths?: Record<string, string> }): string[] {
    if (!fs.existsSync(path)) throw new AccelError(ErrorCodes.BPF_OBJECT, `BPF object ${path} is missing (run npm run build)`);
    const handle = bpf.open_file(path, openOptions(options.pinRoot));
    if (!handle) {
      const errno = lastErrno();
      throw new AccelError(ErrorCodes.BPF_OBJECT, `BPF object ${path} is not a valid BPF ELF object: ${describeErrno(errno)}`, { errno: errnoName(errno) });
    }
    const obj = new BpfObject(handle, path);
    try {
      // Only the maps of this object (it may not use every shared one).
      const own = Object.entries(options.pinPaths ?? {}).filter(([name]) => bpf.find_map(handle, name));
      obj.setPinPaths(Object.fromEntries(own));
      return obj.pinnedMisfits(options.pinRoot, {}, null);
    } finally {
      obj.close();
    }
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
