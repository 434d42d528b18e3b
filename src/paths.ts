/** Where accel finds its build products and where it pins. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root (this file is dist/src/paths.js once compiled). */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export const DEFAULT_BPF_DIR = process.env.ACCEL_BPF_DIR ?? path.join(PACKAGE_ROOT, 'build', 'bpf');
export const SOCKPROBE = process.env.ACCEL_SOCKPROBE ?? path.join(PACKAGE_ROOT, 'build', 'sockprobe');
/** The bench's connection-rate client and server (native/connrate.c). */
export const CONNRATE = process.env.ACCEL_CONNRATE ?? path.join(PACKAGE_ROOT, 'build', 'connrate');
/** This command line's entry point, for running accel in another place. */
export const CLI_ENTRY = path.join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
export const DEFAULT_BPFFS = '/sys/fs/bpf';
/** Every attachment pins below <bpffs>/accel. */
export const PIN_SUBDIR = 'accel';
/** Records of what interception added to routing and tc (not bpffs: it
 * holds no regular files), one per attached cgroup. */
export const STATE_DIR = process.env.ACCEL_STATE_DIR ?? '/run/accel';
