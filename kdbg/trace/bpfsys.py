"""The ``bpf(2)`` and ``perf_event_open(2)`` calls kdbg's loader makes, through ctypes.

Only what the tracers need: create a map, read, write and walk it, load a program,
attach it to a raw tracepoint or to a tracepoint's perf event, and ask the kernel what
a map is. The attribute layouts are ``union bpf_attr`` and ``struct perf_event_attr``
of include/uapi/linux/bpf.h and perf_event.h (x86-64). Errors are :class:`BpfCallError`
carrying the errno; callers turn them into kdbg's typed errors.
"""

from __future__ import annotations

import ctypes as ct
import errno
import fcntl
import os
from functools import cache
from pathlib import Path

_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long

SYS_BPF = 321
SYS_PERF_EVENT_OPEN = 298

# enum bpf_cmd
MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 0, 1, 2, 3, 4
PROG_LOAD, OBJ_PIN = 5, 6
PROG_TEST_RUN = 10
PROG_GET_NEXT_ID, PROG_GET_FD_BY_ID = 11, 13
OBJ_GET_INFO_BY_FD = 15
RAW_TRACEPOINT_OPEN = 17
BTF_LOAD, BTF_GET_FD_BY_ID = 18, 19
# enum bpf_map_type (the ones kdbg's programs declare)
MAP_HASH, MAP_ARRAY, MAP_PERCPU_HASH, MAP_PERCPU_ARRAY, MAP_STACK_TRACE = 1, 2, 5, 6, 7
MAP_RINGBUF = 27
PERCPU_TYPES = frozenset({MAP_PERCPU_HASH, MAP_PERCPU_ARRAY})
# enum bpf_prog_type
PROG_SCHED_CLS, PROG_SCHED_ACT, PROG_TRACEPOINT, PROG_XDP = 3, 4, 5, 6
PROG_RAW_TRACEPOINT, PROG_TRACING = 17, 26
# enum bpf_attach_type
TRACE_RAW_TP = 23  # a BTF-typed raw tracepoint (tp_btf)
TRACE_FEXIT = 25
BPF_ANY = 0
PERF_TYPE_TRACEPOINT = 2
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
PERF_FLAG_FD_CLOEXEC = 1 << 3


class BpfCallError(OSError):
    """A bpf() or perf_event_open() call failed; ``errno`` says why."""


class _MapCreate(ct.Structure):
    _fields_ = [("map_type", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32),
                ("map_flags", ct.c_uint32), ("inner_map_fd", ct.c_uint32),
                ("numa_node", ct.c_uint32), ("map_name", ct.c_char * 16)]


class _MapElem(ct.Structure):
    _fields_ = [("map_fd", ct.c_uint32), ("pad", ct.c_uint32), ("key", ct.c_uint64),
                ("value", ct.c_uint64), ("flags", ct.c_uint64)]


class _ProgLoad(ct.Structure):
    _fields_ = [("prog_type", ct.c_uint32), ("insn_cnt", ct.c_uint32), ("insns", ct.c_uint64),
                ("license", ct.c_uint64), ("log_level", ct.c_uint32), ("log_size", ct.c_uint32),
                ("log_buf", ct.c_uint64), ("kern_version", ct.c_uint32),
                ("prog_flags", ct.c_uint32), ("prog_name", ct.c_char * 16),
                ("prog_ifindex", ct.c_uint32), ("expected_attach_type", ct.c_uint32),
                ("prog_btf_fd", ct.c_uint32), ("func_info_rec_size", ct.c_uint32),
                ("func_info", ct.c_uint64), ("func_info_cnt", ct.c_uint32),
                ("line_info_rec_size", ct.c_uint32), ("line_info", ct.c_uint64),
                ("line_info_cnt", ct.c_uint32), ("attach_btf_id", ct.c_uint32),
                ("attach_prog_fd", ct.c_uint32)]


class _GetId(ct.Structure):
    _fields_ = [("id", ct.c_uint32), ("next_id", ct.c_uint32), ("open_flags", ct.c_uint32)]


class ProgInfo(ct.Structure):
    """``struct bpf_prog_info`` up to ``attach_btf_id`` (Linux 5.16 and later)."""

    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("tag", ct.c_uint8 * 8),
                ("jited_prog_len", ct.c_uint32), ("xlated_prog_len", ct.c_uint32),
                ("jited_prog_insns", ct.c_uint64), ("xlated_prog_insns", ct.c_uint64),
                ("load_time", ct.c_uint64), ("created_by_uid", ct.c_uint32),
                ("nr_map_ids", ct.c_uint32), ("map_ids", ct.c_uint64),
                ("name", ct.c_char * 16), ("ifindex", ct.c_uint32), ("flags", ct.c_uint32),
                ("netns_dev", ct.c_uint64), ("netns_ino", ct.c_uint64),
                ("nr_jited_ksyms", ct.c_uint32), ("nr_jited_func_lens", ct.c_uint32),
                ("jited_ksyms", ct.c_uint64), ("jited_func_lens", ct.c_uint64),
                ("btf_id", ct.c_uint32), ("func_info_rec_size", ct.c_uint32),
                ("func_info", ct.c_uint64), ("nr_func_info", ct.c_uint32),
                ("nr_line_info", ct.c_uint32), ("line_info", ct.c_uint64),
                ("jited_line_info", ct.c_uint64), ("nr_jited_line_info", ct.c_uint32),
                ("line_info_rec_size", ct.c_uint32), ("jited_line_info_rec_size", ct.c_uint32),
                ("nr_prog_tags", ct.c_uint32), ("prog_tags", ct.c_uint64),
                ("run_time_ns", ct.c_uint64), ("run_cnt", ct.c_uint64),
                ("recursion_misses", ct.c_uint64), ("verified_insns", ct.c_uint32),
                ("attach_btf_obj_id", ct.c_uint32), ("attach_btf_id", ct.c_uint32)]


class _BtfInfo(ct.Structure):
    _fields_ = [("btf", ct.c_uint64), ("btf_size", ct.c_uint32), ("id", ct.c_uint32),
                ("name", ct.c_uint64), ("name_len", ct.c_uint32), ("kernel_btf", ct.c_uint32)]


class _InfoByFd(ct.Structure):
    _fields_ = [("bpf_fd", ct.c_uint32), ("info_len", ct.c_uint32), ("info", ct.c_uint64)]


class _RawTpOpen(ct.Structure):
    _fields_ = [("name", ct.c_uint64), ("prog_fd", ct.c_uint32)]


class _TestRun(ct.Structure):
    _fields_ = [("prog_fd", ct.c_uint32), ("retval", ct.c_uint32),
                ("data_size_in", ct.c_uint32), ("data_size_out", ct.c_uint32),
                ("data_in", ct.c_uint64), ("data_out", ct.c_uint64), ("repeat", ct.c_uint32),
                ("duration", ct.c_uint32), ("ctx_size_in", ct.c_uint32),
                ("ctx_size_out", ct.c_uint32), ("ctx_in", ct.c_uint64), ("ctx_out", ct.c_uint64),
                ("flags", ct.c_uint32), ("cpu", ct.c_uint32)]


class MapInfo(ct.Structure):
    """The head of ``struct bpf_map_info``: what a map is."""

    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32),
                ("map_flags", ct.c_uint32), ("name", ct.c_char * 16)]


class _PerfAttr(ct.Structure):
    _fields_ = [("type", ct.c_uint32), ("size", ct.c_uint32), ("config", ct.c_uint64),
                ("sample_period", ct.c_uint64), ("sample_type", ct.c_uint64),
                ("read_format", ct.c_uint64), ("flags", ct.c_uint64),
                ("wakeup_events", ct.c_uint32), ("bp_type", ct.c_uint32),
                ("config1", ct.c_uint64), ("config2", ct.c_uint64),
                ("branch_sample_type", ct.c_uint64), ("sample_regs_user", ct.c_uint64),
                ("sample_stack_user", ct.c_uint32), ("clockid", ct.c_int32),
                ("sample_regs_intr", ct.c_uint64), ("aux_watermark", ct.c_uint32),
                ("sample_max_stack", ct.c_uint16), ("reserved", ct.c_uint16)]


def _bpf(cmd: int, attr: ct.Structure) -> int:
    ret = _libc.syscall(SYS_BPF, cmd, ct.byref(attr), ct.sizeof(attr))
    if ret < 0:
        err = ct.get_errno()
        raise BpfCallError(err, os.strerror(err))
    return int(ret)


def _addr(buf: ct.Array | ct.Structure | ct.c_uint64) -> int:
    return ct.addressof(buf)


@cache
def possible_cpus() -> int:
    """How many CPUs a per-CPU map holds a value for (``/sys/devices/system/cpu/possible``)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               flags: int = 0, name: str = "") -> int:
    """A new map; its fd."""
    attr = _MapCreate(map_type, key_size, value_size, max_entries, flags, 0, 0,
                      name.encode()[:15])
    return _bpf(MAP_CREATE, attr)


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value under ``key`` (``value_size`` bytes; all CPUs' for a per-CPU map), or None."""
    k = ct.create_string_buffer(key, len(key) or 1)
    v = ct.create_string_buffer(value_size)
    try:
        _bpf(MAP_LOOKUP_ELEM, _MapElem(fd, 0, _addr(k), _addr(v), 0))
    except BpfCallError as err:
        if err.errno == errno.ENOENT:
            return None
        raise
    return v.raw


def map_update(fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    """Set ``key`` to ``value``."""
    k = ct.create_string_buffer(key, len(key))
    v = ct.create_string_buffer(value, len(value))
    _bpf(MAP_UPDATE_ELEM, _MapElem(fd, 0, _addr(k), _addr(v), flags))


def map_keys(fd: int, key_size: int) -> list[bytes]:
    """Every key of a hash map, in the kernel's order."""
    keys: list[bytes] = []
    cur = ct.create_string_buffer(key_size)
    nxt = ct.create_string_buffer(key_size)
    attr = _MapElem(fd, 0, 0, _addr(nxt), 0)  # key 0 (NULL): the first key
    while True:
        try:
            _bpf(MAP_GET_NEXT_KEY, attr)
        except BpfCallError as err:
            if err.errno == errno.ENOENT:
                return keys
            raise
        keys.append(nxt.raw)
        ct.memmove(cur, nxt, key_size)
        attr.key = _addr(cur)


def map_info(fd: int) -> MapInfo:
    """What the map behind ``fd`` is (type, sizes, name)."""
    info = MapInfo()
    _bpf(OBJ_GET_INFO_BY_FD, _InfoByFd(fd, ct.sizeof(info), _addr(info)))
    return info


def prog_load(prog_type: int, insns: bytes, name: str, license_: str = "GPL",
              log_size: int = 0, btf_id: int = 0, target_fd: int = 0) -> tuple[int, str]:
    """Load a program: (its fd, or -errno on failure; the verifier's log when
    ``log_size`` asks for one). ``btf_id``: a tp_btf program's tracepoint, the id of
    its ``btf_trace_NAME`` typedef in the kernel's BTF; with ``target_fd``, an fexit
    program on the BPF program behind that fd, ``btf_id`` its function in the target's
    own BTF."""
    code = ct.create_string_buffer(insns, len(insns))
    lic = ct.create_string_buffer(license_.encode())
    log = ct.create_string_buffer(log_size) if log_size else None
    attr = _ProgLoad(prog_type, len(insns) // 8, _addr(code), _addr(lic),
                     1 if log_size else 0, log_size, _addr(log) if log is not None else 0,
                     0, 0, name.encode()[:15])
    if btf_id:
        attr.expected_attach_type = TRACE_FEXIT if target_fd else TRACE_RAW_TP
        attr.attach_btf_id = btf_id
        attr.attach_prog_fd = target_fd
    try:
        fd = _bpf(PROG_LOAD, attr)
    except BpfCallError as err:
        fd = -(err.errno or errno.EINVAL)
    text = log.value.decode(errors="replace") if log is not None else ""
    return fd, text


def raw_tracepoint_open(name: str | None, prog_fd: int) -> int:
    """Attach a raw tracepoint program to tracepoint ``name`` (None: a tp_btf program,
    whose tracepoint it was loaded for); the link's fd (closing it detaches)."""
    buf = ct.create_string_buffer(name.encode()) if name is not None else None
    return _bpf(RAW_TRACEPOINT_OPEN, _RawTpOpen(_addr(buf) if buf is not None else 0, prog_fd))


def prog_test_run(prog_fd: int, args: list[int]) -> int:
    """Run a raw tracepoint program once, now, in the calling thread, with ``args`` as
    its tracepoint arguments (``BPF_PROG_TEST_RUN``, Linux 5.10 and later); its return
    value."""
    ctx = (ct.c_uint64 * len(args))(*args)
    attr = _TestRun(prog_fd=prog_fd, ctx_size_in=ct.sizeof(ctx), ctx_in=_addr(ctx))
    _bpf(PROG_TEST_RUN, attr)
    return int(attr.retval)


def perf_tracepoint_attach(tp_id: int, prog_fd: int) -> int:
    """Attach a tracepoint program to the tracepoint with tracefs id ``tp_id``, through a
    perf event (as bcc does); the event's fd (closing it detaches)."""
    attr = _PerfAttr(type=PERF_TYPE_TRACEPOINT, size=ct.sizeof(_PerfAttr), config=tp_id,
                     sample_period=1, wakeup_events=1)
    fd = _libc.syscall(SYS_PERF_EVENT_OPEN, ct.byref(attr), -1, 0, -1, PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        err = ct.get_errno()
        raise BpfCallError(err, os.strerror(err))
    try:
        fcntl.ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog_fd)
        fcntl.ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)
    except OSError:
        os.close(fd)
        raise
    return int(fd)


def prog_next_id(after: int) -> int | None:
    """The id of the loaded program after id ``after`` (0: the first), or None."""
    attr = _GetId(after)
    try:
        _bpf(PROG_GET_NEXT_ID, attr)
    except BpfCallError as err:
        if err.errno == errno.ENOENT:
            return None
        raise
    return int(attr.next_id)


def prog_fd_by_id(prog_id: int) -> int:
    """An fd on loaded program ``prog_id`` (ENOENT: it is gone)."""
    return _bpf(PROG_GET_FD_BY_ID, _GetId(prog_id))


def prog_info_into(fd: int, info: ProgInfo) -> ProgInfo:
    """Fill ``info``, whose counts and buffers say what to read, for the program at ``fd``."""
    _bpf(OBJ_GET_INFO_BY_FD, _InfoByFd(fd, ct.sizeof(info), _addr(info)))
    return info


def prog_info(fd: int) -> ProgInfo:
    """What the program behind ``fd`` is (type, id, tag, name, BTF id, counts)."""
    return prog_info_into(fd, ProgInfo())


def prog_tables(fd: int) -> tuple[ProgInfo, bytes, bytes, bytes]:
    """The program's info with its translated instructions, its ``bpf_func_info``
    records and its ``bpf_line_info`` records (insn_off, file_name_off, line_off,
    line_col; 16 bytes each), as the kernel has them after verification."""
    head = prog_info(fd)
    xlated = ct.create_string_buffer(head.xlated_prog_len or 1)
    funcs = ct.create_string_buffer(head.nr_func_info * 8 or 1)
    lines = ct.create_string_buffer(head.nr_line_info * 16 or 1)
    info = ProgInfo(xlated_prog_len=head.xlated_prog_len, xlated_prog_insns=_addr(xlated),
                    nr_func_info=head.nr_func_info, func_info_rec_size=8,
                    func_info=_addr(funcs), nr_line_info=head.nr_line_info,
                    line_info_rec_size=16, line_info=_addr(lines))
    prog_info_into(fd, info)
    return (info, xlated.raw[:info.xlated_prog_len], funcs.raw[:info.nr_func_info * 8],
            lines.raw[:info.nr_line_info * 16])


def btf_blob(btf_id: int) -> bytes:
    """The BTF object ``btf_id`` (a program's own, say) as raw bytes."""
    fd = _bpf(BTF_GET_FD_BY_ID, _GetId(btf_id))
    try:
        head = _BtfInfo()
        _bpf(OBJ_GET_INFO_BY_FD, _InfoByFd(fd, ct.sizeof(head), _addr(head)))
        buf = ct.create_string_buffer(head.btf_size or 1)
        info = _BtfInfo(btf=_addr(buf), btf_size=head.btf_size)
        _bpf(OBJ_GET_INFO_BY_FD, _InfoByFd(fd, ct.sizeof(info), _addr(info)))
        return buf.raw[:info.btf_size]
    finally:
        os.close(fd)


class _BtfLoad(ct.Structure):
    _fields_ = [("btf", ct.c_uint64), ("btf_log_buf", ct.c_uint64), ("btf_size", ct.c_uint32),
                ("btf_log_size", ct.c_uint32), ("btf_log_level", ct.c_uint32)]


def btf_load(blob: bytes) -> int:
    """Load a BTF object (a program's own types); its fd."""
    buf = ct.create_string_buffer(blob, len(blob))
    return _bpf(BTF_LOAD, _BtfLoad(_addr(buf), 0, len(blob), 0, 0))


def prog_load_btf(prog_type: int, insns: bytes, name: str, btf_fd: int,
                  func_info: bytes) -> int:
    """Load a program with its own BTF and ``bpf_func_info`` records (8 bytes each);
    its fd. For a program that fexit programs can attach to."""
    code = ct.create_string_buffer(insns, len(insns))
    lic = ct.create_string_buffer(b"GPL")
    funcs = ct.create_string_buffer(func_info, len(func_info))
    attr = _ProgLoad(prog_type, len(insns) // 8, _addr(code), _addr(lic), 0, 0, 0, 0, 0,
                     name.encode()[:15])
    attr.prog_btf_fd, attr.func_info_rec_size = btf_fd, 8
    attr.func_info, attr.func_info_cnt = _addr(funcs), len(func_info) // 8
    return _bpf(PROG_LOAD, attr)


class _ObjPin(ct.Structure):
    _fields_ = [("pathname", ct.c_uint64), ("bpf_fd", ct.c_uint32), ("file_flags", ct.c_uint32)]


def obj_pin(fd: int, path: str) -> None:
    """Pin the program or map behind ``fd`` at ``path`` in a bpf filesystem."""
    name = ct.create_string_buffer(path.encode())
    _bpf(OBJ_PIN, _ObjPin(_addr(name), fd, 0))
