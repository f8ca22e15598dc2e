"""Struct offsets and tracepoint arguments the BPF programs need, from the running
kernel's BTF.

The headers bcc compiles against may be another kernel's (Debian's 6.1 headers
on a 6.18 host), so no field is read at a header offset. Results are cached
per BTF blob, keyed by its hash, under the cache dir (parsing the BTF takes
0.1 s; reading and hashing it, 10 ms).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from kdbg.dirs import cache_dir
from kdbg.errors import BtfError
from kdbg.symbols.btf import KIND_STRUCT, Btf

BTF_PATH = "/sys/kernel/btf/vmlinux"

# placeholder -> BTF field path; None in the result means "absent in this kernel"
FIELDS: dict[str, tuple[str, ...]] = {
    "SKB_DEV": ("sk_buff.dev",),
    "SKB_SK": ("sk_buff.sk",),
    "SKB_HEAD": ("sk_buff.head",),
    "SKB_NETWORK_HDR": ("sk_buff.network_header",),
    "SKB_TRANSPORT_HDR": ("sk_buff.transport_header",),
    "SKB_LEN": ("sk_buff.len",),
    "SKB_PROTOCOL": ("sk_buff.protocol",),
    "SKB_MARK": ("sk_buff.mark",),
    # only with CONFIG_NF_CONNTRACK (or CONFIG_NF_CONNTRACK built as a module)
    "SKB_NFCT": ("sk_buff._nfct",),
    # in vmlinux's BTF only when conntrack is built in (a module has its own BTF)
    "CT_ZONE_ID": ("nf_conn.zone.id",),
    "CT_MARK": ("nf_conn.mark",),
    "CT_STATUS": ("nf_conn.status",),
    "CT_TUPLEHASH": ("nf_conn.tuplehash",),
    "CT_HASH_TUPLE": ("nf_conntrack_tuple_hash.tuple",),
    "CT_TUPLE_DST": ("nf_conntrack_tuple.dst",),
    "CT_TUPLE_PROTONUM": ("nf_conntrack_tuple.dst.protonum",),
    "CT_TUPLE_DIR": ("nf_conntrack_tuple.dst.dir",),
    "CT_HASH_SIZE": ("sizeof nf_conntrack_tuple_hash",),  # a struct's size, not an offset
    "DEV_IFINDEX": ("net_device.ifindex",),
    "DEV_NAME": ("net_device.name",),
    # possible_net_t is empty without CONFIG_NET_NS
    "DEV_NET": ("net_device.nd_net.net",),
    "SK_NET": ("sock.__sk_common.skc_net.net",),
    "NET_INUM": ("net.ns.inum",),
}
OPTIONAL = frozenset({"DEV_NET", "SK_NET", "SKB_NFCT", "CT_ZONE_ID", "CT_MARK", "CT_STATUS",
                      "CT_TUPLEHASH", "CT_HASH_TUPLE", "CT_TUPLE_DST", "CT_TUPLE_PROTONUM",
                      "CT_TUPLE_DIR", "CT_HASH_SIZE"})

# What the path tracer reads besides: L3 from skb->data on receive.
EXTRA_FIELDS: dict[str, tuple[str, ...]] = {"SKB_DATA": ("sk_buff.data",)}


def compute(btf: Btf, fields: dict[str, tuple[str, ...]] = FIELDS) -> dict[str, int]:
    """Byte offset of each field, or size of each ``"sizeof STRUCT"`` (-1 for an optional
    one this kernel lacks)."""
    out: dict[str, int] = {}
    for key, paths in fields.items():
        for path in paths:
            try:
                out[key] = (btf.size_of(btf.find(KIND_STRUCT, path[7:]))
                            if path.startswith("sizeof ") else btf.field(path).offset)
                break
            except BtfError:
                continue
        else:
            if key not in OPTIONAL:
                raise BtfError(f"BTF of {btf.source} has none of {', '.join(paths)}")
            out[key] = -1
    return out


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BtfError(
            f"no BTF at {path}", hint="kdbg needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        ) from None
    except OSError as err:
        raise BtfError(f"cannot read BTF at {path}: {err.strerror}") from None


def identity(path: Path) -> bytes:
    """What names a BTF blob in the cache. The running kernel's cannot change while it
    runs, so it is named by the kernel and the boot (two small reads, not 5 MB read
    and hashed); any other file, by its bytes."""
    if str(path) == BTF_PATH:
        try:
            return (Path("/proc/version").read_bytes() + b"\0" +
                    Path("/proc/sys/kernel/random/boot_id").read_bytes() +
                    str(path.stat().st_size).encode())
        except OSError:
            pass
    return _read(path)


def cached(name: str, salt: object, work: Callable[[Btf], dict[str, int]],
           btf_path: str | Path = BTF_PATH) -> dict[str, int]:
    """``work(btf)`` for the BTF at ``btf_path``, cached as ``name`` by the blob's
    :func:`identity` and ``salt`` (what ``work`` looks for)."""
    path = Path(btf_path)
    key = hashlib.sha256(identity(path) + json.dumps(salt, sort_keys=True).encode()
                         ).hexdigest()[:24]
    file = cache_dir("btf") / f"{name}-{key}.json"
    try:
        return {k: int(v) for k, v in json.loads(file.read_text()).items()}
    except (OSError, ValueError):
        pass
    result = work(Btf(_read(path), source=str(path)))
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, sort_keys=True))
    tmp.replace(file)
    return result


def fields_of(fields: dict[str, tuple[str, ...]], name: str,
              btf_path: str | Path = BTF_PATH) -> dict[str, int]:
    """:func:`compute` of ``fields``, cached as ``name``."""
    return cached(name, fields, lambda btf: compute(btf, fields), btf_path)


def for_running_kernel(btf_path: str | Path = BTF_PATH) -> dict[str, int]:
    """The drop program's offsets (:data:`FIELDS`) in the BTF at ``btf_path``."""
    return fields_of(FIELDS, "offsets", btf_path)


def arg_positions(types: list[str], roles: dict[str, str]) -> dict[str, int]:
    """Each role's position among a tracepoint's argument ``types`` (C spellings), taking
    the first unused argument of the role's type; -1 for a role no argument fills."""
    out: dict[str, int] = {}
    for role, ctype in roles.items():
        out[role] = next((i for i, t in enumerate(types)
                          if t == ctype and i not in out.values()), -1)
    return out


def tracepoint_args(tracepoint: str, roles: dict[str, str],
                    btf_path: str | Path = BTF_PATH) -> dict[str, int]:
    """Where each argument of raw tracepoint ``tracepoint`` is (:func:`arg_positions`),
    and ``BTF_ID``, the id of its ``btf_trace_`` typedef (what a tp_btf program is loaded
    for)."""
    def work(btf: Btf) -> dict[str, int]:
        tid, types = btf.tracepoint_proto(tracepoint)
        return {"BTF_ID": tid, **arg_positions(types, roles)}
    return cached(f"tpargs-{tracepoint}", roles, work, btf_path)
