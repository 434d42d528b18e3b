/**
 * Raw bindings to the system libbpf (libbpf.so.1) and the few libc calls the
 * controller needs, declared from their C prototypes with koffi. This is the
 * only module that imports koffi: its siblings in src/bpf/ use it through
 * the `koffi` re-export, and src/sys/socket.ts (libc socket helpers) uses
 * `libcFns`.
 *
 * libbpf >= 1.0 conventions: int-returning calls return -errno on failure;
 * pointer-returning calls return NULL and set errno (read it right away with
 * koffi.errno()).
 */
import koffi from 'koffi';

export { koffi };

/** Opaque libbpf handles. */
export const BpfObjectT = koffi.opaque('bpf_object');
export const BpfProgramT = koffi.opaque('bpf_program');
export const BpfMapT = koffi.opaque('bpf_map');
export const BpfLinkT = koffi.opaque('bpf_link');
export const BtfT = koffi.opaque('btf');

/** The cgroup member of union bpf_iter_link_info (uapi <linux/bpf.h>):
 * which cgroup an iter/cgroup program visits, and in what order. */
export const CgroupIterLinkInfoT = koffi.struct('accel_cgroup_iter_link_info', {
  order: 'uint32_t',
  cgroup_fd: 'uint32_t',
  cgroup_id: 'uint64_t',
});

/** struct bpf_iter_attach_opts of libbpf 1.1.2 (libbpf.h): sz first. */
export const IterAttachOptsT = koffi.struct('bpf_iter_attach_opts', {
  sz: 'size_t',
  link_info: koffi.pointer(CgroupIterLinkInfoT),
  link_info_len: 'uint32_t',
});

export type Handle = unknown;

/** struct bpf_prog_load_opts of libbpf 1.1.2 (bpf.h), 64-bit layout (104
 * bytes, log_buf at 96: checked with offsetof): accel sets only sz and the
 * verifier's log. */
export const ProgLoadOptsT = koffi.struct('bpf_prog_load_opts', {
  sz: 'size_t',
  attempts: 'int',
  expected_attach_type: 'int',
  prog_btf_fd: 'uint32_t',
  prog_flags: 'uint32_t',
  prog_ifindex: 'uint32_t',
  kern_version: 'uint32_t',
  attach_btf_id: 'uint32_t',
  attach_prog_fd: 'uint32_t',
  attach_btf_obj_fd: 'uint32_t',
  fd_array: 'const void *',
  func_info: 'const void *',
  func_info_cnt: 'uint32_t',
  func_info_rec_size: 'uint32_t',
  line_info: 'const void *',
  line_info_cnt: 'uint32_t',
  line_info_rec_size: 'uint32_t',
  log_level: 'uint32_t',
  log_size: 'uint32_t',
  log_buf: 'void *',
});

/** Options to load a program with the verifier's log (level 1) in `log`. */
export function progLoadWithLog(log: Buffer): Record<string, unknown> {
  if (koffi.sizeof(ProgLoadOptsT) !== 104 || koffi.offsetof(ProgLoadOptsT, 'log_buf') !== 96) {
    throw new Error('struct bpf_prog_load_opts: unexpected layout on this platform');
  }
  return { sz: koffi.sizeof(ProgLoadOptsT), log_level: 1, log_size: log.length, log_buf: log };
}

/**
 * struct bpf_object_open_opts of libbpf 1.1.2 (libbpf.h), x86_64/arm64
 * layout: sz first, the object's size, so libbpf knows which fields this
 * caller has. accel sets only pin_root_path.
 */
export const BpfObjectOpenOptsT = koffi.struct('bpf_object_open_opts', {
  sz: 'size_t',
  object_name: 'const char *',
  relaxed_maps: 'bool',
  pin_root_path: 'const char *',
  attach_prog_fd_removed: 'uint32_t',
  kconfig: 'const char *',
  btf_custom_path: 'const char *',
  kernel_log_buf: 'char *',
  kernel_log_size: 'size_t',
  kernel_log_level: 'uint32_t',
});

/** Options to open an object with its pinned maps under `pinRoot`. */
export function openOptions(pinRoot: string): Record<string, unknown> {
  // The layout of libbpf 1.1.2 on 64-bit targets (checked with offsetof).
  if (koffi.sizeof(BpfObjectOpenOptsT) !== 80 || koffi.offsetof(BpfObjectOpenOptsT, 'pin_root_path') !== 24) {
    throw new Error('struct bpf_object_open_opts: unexpected layout on this platform');
  }
  return {
    sz: koffi.sizeof(BpfObjectOpenOptsT),
    object_name: null,
    relaxed_maps: false,
    pin_root_path: pinRoot,
    attach_prog_fd_removed: 0,
    kconfig: null,
    btf_custom_path: null,
    kernel_log_buf: null,
    kernel_log_size: 0,
    kernel_log_level: 0,
  };
}

const libbpf = koffi.load('libbpf.so.1');
const libc = koffi.load('libc.so.6');

const PrintFn = koffi.proto('int accel_libbpf_print_fn(int level, const char *fmt, void *args)');

export const bpf = {
  open_file: libbpf.func('bpf_object *bpf_object__open_file(const char *path, const bpf_object_open_opts *opts)'),
  object_load: libbpf.func('int bpf_object__load(bpf_object *obj)'),
  object_close: libbpf.func('void bpf_object__close(bpf_object *obj)'),
  find_program: libbpf.func('bpf_program *bpf_object__find_program_by_name(const bpf_object *obj, const char *name)'),
  find_map: libbpf.func('bpf_map *bpf_object__find_map_by_name(const bpf_object *obj, const char *name)'),
  next_map: libbpf.func('bpf_map *bpf_object__next_map(const bpf_object *obj, const bpf_map *map)'),
  map_name: libbpf.func('const char *bpf_map__name(const bpf_map *map)'),
  map_fd: libbpf.func('int bpf_map__fd(const bpf_map *map)'),
  map_reuse_fd: libbpf.func('int bpf_map__reuse_fd(bpf_map *map, int fd)'),
  map_pin_path: libbpf.func('const char *bpf_map__pin_path(const bpf_map *map)'),
  map_set_pin_path: libbpf.func('int bpf_map__set_pin_path(bpf_map *map, const char *path)'),
  map_type: libbpf.func('int bpf_map__type(const bpf_map *map)'),
  map_key_size: libbpf.func('uint32_t bpf_map__key_size(const bpf_map *map)'),
  map_value_size: libbpf.func('uint32_t bpf_map__value_size(const bpf_map *map)'),
  map_max_entries: libbpf.func('uint32_t bpf_map__max_entries(const bpf_map *map)'),
  map_flags: libbpf.func('uint32_t bpf_map__map_flags(const bpf_map *map)'),
  map_is_internal: libbpf.func('bool bpf_map__is_internal(const bpf_map *map)'),
  map_set_max_entries: libbpf.func('int bpf_map__set_max_entries(bpf_map *map, uint32_t max_entries)'),
  program_fd: libbpf.func('int bpf_program__fd(const bpf_program *prog)'),
  attach_cgroup: libbpf.func('bpf_link *bpf_program__attach_cgroup(const bpf_program *prog, int cgroup_fd)'),
  link_pin: libbpf.func('int bpf_link__pin(bpf_link *link, const char *path)'),
  link_disconnect: libbpf.func('void bpf_link__disconnect(bpf_link *link)'),
  link_destroy: libbpf.func('int bpf_link__destroy(bpf_link *link)'),
  attach_trace: libbpf.func('bpf_link *bpf_program__attach_trace(const bpf_program *prog)'),
  attach_iter: libbpf.func('bpf_link *bpf_program__attach_iter(const bpf_program *prog, const bpf_iter_attach_opts *opts)'),
  link_fd: libbpf.func('int bpf_link__fd(const bpf_link *link)'),
  // Low-level link calls on fds (libbpf 1.1 has no tcx wrappers): for tcx,
  // target_fd is an ifindex; opts may be NULL (no relative anchor: append).
  link_create: libbpf.func('int bpf_link_create(int prog_fd, int target_fd, int attach_type, const void *opts)'),
  link_detach: libbpf.func('int bpf_link_detach(int link_fd)'),
  // opts NULL: replace whatever program the link runs (no old_prog_fd check).
  link_update: libbpf.func('int bpf_link_update(int link_fd, int new_prog_fd, const void *opts)'),
  prog_load: libbpf.func('int bpf_prog_load(int prog_type, const char *prog_name, const char *license, const void *insns, size_t insn_cnt, const bpf_prog_load_opts *opts)'),
  iter_create: libbpf.func('int bpf_iter_create(int link_fd)'),
  prog_attach: libbpf.func('int bpf_prog_attach(int prog_fd, int attachable_fd, int type, unsigned int flags)'),
  prog_query: libbpf.func('int bpf_prog_query(int target_fd, int type, uint32_t query_flags, _Out_ uint32_t *attach_flags, void *prog_ids, _Inout_ uint32_t *prog_cnt)'),
  obj_get: libbpf.func('int bpf_obj_get(const char *pathname)'),
  obj_pin: libbpf.func('int bpf_obj_pin(int fd, const char *pathname)'),
  obj_get_info_by_fd: libbpf.func('int bpf_obj_get_info_by_fd(int fd, void *info, _Inout_ uint32_t *len)'),
  // opts NULL: no flags, no BTF (a map user space makes for programs to share by pin).
  map_create: libbpf.func('int bpf_map_create(int map_type, const char *map_name, uint32_t key_size, uint32_t value_size, uint32_t max_entries, const void *opts)'),
  map_lookup_elem: libbpf.func('int bpf_map_lookup_elem(int fd, const void *key, void *value)'),
  map_update_elem: libbpf.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
  map_delete_elem: libbpf.func('int bpf_map_delete_elem(int fd, const void *key)'),
  map_get_next_key: libbpf.func('int bpf_map_get_next_key(int fd, const void *key, void *next_key)'),
  num_possible_cpus: libbpf.func('int libbpf_num_possible_cpus(void)'),
  probe_prog_type: libbpf.func('int libbpf_probe_bpf_prog_type(int prog_type, const void *opts)'),
  probe_map_type: libbpf.func('int libbpf_probe_bpf_map_type(int map_type, const void *opts)'),
  set_print: libbpf.func('void *libbpf_set_print(accel_libbpf_print_fn *fn)'),
  // The running kernel's BTF (/sys/kernel/btf/vmlinux, or where libbpf
  // finds it); NULL and errno when there is none.
  btf_load_vmlinux: libbpf.func('btf *btf__load_vmlinux_btf(void)'),
  btf_find_by_name_kind: libbpf.func('int btf__find_by_name_kind(const btf *btf, const char *name, uint32_t kind)'),
  btf_raw_data: libbpf.func('const void *btf__raw_data(const btf *btf, _Out_ uint32_t *size)'),
  btf_free: libbpf.func('void btf__free(btf *btf)'),
};

export const libcFns = {
  vsnprintf: libc.func('int vsnprintf(_Out_ uint8_t *buf, size_t size, const char *fmt, void *ap)'),
  mount: libc.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data)'),
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)'),
  bind: libc.func('int bind(int fd, const void *addr, uint32_t len)'),
  listen: libc.func('int listen(int fd, int backlog)'),
  close: libc.func('int close(int fd)'),
  // pidfd_open and pidfd_getfd through syscall(2): glibc wraps them only
  // from 2.36, and binding a missing symbol would fail every command.
  syscall: libc.func('long syscall(long nr, ...)'),
  // Variadic in glibc; declared with the int third argument of the
  // commands used (F_DUPFD_CLOEXEC).
  fcntl: libc.func('int fcntl(int fd, int cmd, int arg)'),
  shutdown: libc.func('int shutdown(int fd, int how)'),
  // Variadic in glibc, a plain system call stub: its third argument is
  // passed like a fixed one.
  ioctl: libc.func('int ioctl(int fd, unsigned long request, _Out_ void *arg)'),
  getsockopt: libc.func('int getsockopt(int fd, int level, int name, _Out_ void *value, _Inout_ uint32_t *len)'),
  flock: libc.func('int flock(int fd, int operation)'),
  getsockname: libc.func('int getsockname(int fd, _Out_ void *addr, _Inout_ uint32_t *len)'),
  // Give the free memory of malloc's heaps back to the kernel: each object
  // load parses the kernel's BTF (megabytes, freed right after), which
  // leaves a long-running agent's heap large and holed otherwise.
  malloc_trim: libc.func('int malloc_trim(size_t pad)'),
  // malloc's tunables (M_TRIM_THRESHOLD, M_MMAP_THRESHOLD: src/agent/malloc.ts).
  mallopt: libc.func('int mallopt(int param, int value)'),
};

export { PrintFn };

/** Linux system call numbers, the same on every architecture since 5.1. */
const SYS_PIDFD_OPEN = 434;
const SYS_PIDFD_GETFD = 438;

export function pidfdOpen(pid: number): number {
  return Number(libcFns.syscall(SYS_PIDFD_OPEN, 'int', pid, 'unsigned int', 0));
}

export function pidfdGetfd(pidfd: number, targetFd: number): number {
  return Number(libcFns.syscall(SYS_PIDFD_GETFD, 'int', pidfd, 'int', targetFd, 'unsigned int', 0));
}

/** errno of the last failing call on this thread. */
export function lastErrno(): number {
  return koffi.errno();
}
