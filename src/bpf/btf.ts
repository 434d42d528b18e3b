/**
 * The running kernel's BTF, as libbpf loads it (/sys/kernel/btf/vmlinux, or
 * a vmlinux image where libbpf looks for one): what functions and
 * enumerators the kernel has. A kfunc exists where its FUNC does; a
 * constant of the uapi (an optname, a flag) where its enumerator does.
 */
import { AccelError, ErrorCodes } from '../errors.js';
import { describeErrno, errnoName } from './errno.js';
import { type Handle, bpf, koffi, lastErrno } from './native.js';

/** BTF kinds (uapi <linux/btf.h>). */
const Kind = {
  INT: 1,
  ARRAY: 3,
  STRUCT: 4,
  UNION: 5,
  ENUM: 6,
  FUNC: 12,
  FUNC_PROTO: 13,
  VAR: 14,
  DATASEC: 15,
  DECL_TAG: 17,
  ENUM64: 19,
} as const;

const BTF_MAGIC = 0xeb9f;
/** struct btf_type: name_off, info, size/type. */
const TYPE_HEADER = 12;

/**
 * Bytes that follow a struct btf_type of `kind` with `vlen` members (the
 * BTF format, Documentation/bpf/btf.rst); null for a kind this reader does
 * not know, after which nothing further can be read.
 */
function trailing(kind: number, vlen: number): number | null {
  switch (kind) {
    case Kind.INT:
    case Kind.VAR:
    case Kind.DECL_TAG:
      return 4;
    case Kind.ARRAY:
      return 12;
    case Kind.STRUCT:
    case Kind.UNION:
    case Kind.DATASEC:
    case Kind.ENUM64:
      return vlen * 12;
    case Kind.ENUM:
    case Kind.FUNC_PROTO:
      return vlen * 8;
    // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
    case 2:
    case 7:
    case 8:
    case 9:
    case 10:
    case 11:
    case Kind.FUNC:
    case 16:
    case 18:
      return 0;
    default:
      return null;
  }
}

/** Every enumerator name of the ENUM and ENUM64 types in raw BTF. */
export function enumeratorNames(raw: Buffer): Set<string> {
  if (raw.length < 24 || raw.readUInt16LE(0) !== BTF_MAGIC) throw new Error('not little-endian BTF');
  const hdrLen = raw.readUInt32LE(4);
  const typeStart = hdrLen + raw.readUInt32LE(8);
  const typeEnd = typeStart + raw.readUInt32LE(12);
  const strStart = hdrLen + raw.readUInt32LE(16);
  const name = (off: number) => raw.toString('latin1', strStart + off, raw.indexOf(0, strStart + off));
  const names = new Set<string>();
  for (let at = typeStart; at + TYPE_HEADER <= typeEnd;) {
    const info = raw.readUInt32LE(at + 4);
    const kind = (info >>> 24) & 0x1f;
    const vlen = info & 0xffff;
    at += TYPE_HEADER;
    if (kind === Kind.ENUM || kind === Kind.ENUM64) {
      const step = kind === Kind.ENUM ? 8 : 12;
      for (let i = 0; i < vlen; i++) names.add(name(raw.readUInt32LE(at + i * step)));
    }
    const skip = trailing(kind, vlen);
    if (skip === null) break;
    at += skip;
  }
  return names;
}

export class KernelBtf {
  private enumerators: Set<string> | null = null;

  private constructor(private readonly handle: Handle) {}

  /** The running kernel's BTF; E_KERNEL_FEATURE if it has none
   * (CONFIG_DEBUG_INFO_BTF). Kept until free(). */
  static load(): KernelBtf {
    const handle = bpf.btf_load_vmlinux();
    if (!handle) {
      const errno = lastErrno();
      throw new AccelError(ErrorCodes.KERNEL_FEATURE, `cannot load the kernel's BTF (CONFIG_DEBUG_INFO_BTF, /sys/kernel/btf/vmlinux): ${describeErrno(errno)}`, {
        errno: errnoName(errno),
      });
    }
    return new KernelBtf(handle);
  }

  /** Does the kernel have a function (a kfunc, an iterator target) of this name? */
  hasFunc(name: string): boolean {
    return (bpf.btf_find_by_name_kind(this.handle, name, Kind.FUNC) as number) > 0;
  }

  /** Does one of the kernel's enums have an enumerator of this name? */
  hasEnumerator(name: string): boolean {
    if (!this.enumerators) {
      const size = [0];
      const data = bpf.btf_raw_data(this.handle, size);
      if (!data) throw new AccelError(ErrorCodes.INTERNAL, "libbpf gave no raw data for the kernel's BTF");
      this.enumerators = enumeratorNames(Buffer.from(koffi.view(data, size[0] ?? 0)));
    }
    return this.enumerators.has(name);
  }

  /** libbpf's copy of the kernel's BTF (its raw 5 MB and their index) goes. */
  free(): void {
    bpf.btf_free(this.handle);
    this.enumerators = null;
  }
}

let kernel: KernelBtf | undefined;

/** The running kernel's BTF, loaded once and kept until releaseKernelBtf(). */
export function kernelBtf(): KernelBtf {
  kernel ??= KernelBtf.load();
  return kernel;
}

/** Free the kernel's BTF once what was asked of it is known (the feature
 * probes keep their answers): a long-running agent would otherwise hold
 * some 7 MB for nothing. The next kernelBtf() loads it again. */
export function releaseKernelBtf(): void {
  kernel?.free();
  kernel = undefined;
}
