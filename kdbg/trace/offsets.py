"""Struct offsets the drop program needs, from the running kernel's BTF.

The headers bcc compiles against may be another kernel's (Debian's 6.1 headers
on a 6.18 host), so no field is read at a header offset. Results are cached
per BTF blob, keyed by its hash, under the cache dir.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kdbg.dirs import cache_dir
from kdbg.errors import BtfError
from kdbg.symbols.btf import Btf

# placeholder -> BTF field path; None in the result means "absent in this kernel"
FIELDS: dict[str, tuple[str, ...]] = {
    "SKB_DEV": ("sk_buff.dev",),
    "SKB_SK": ("sk_buff.sk",),
    "SKB_HEAD": ("sk_buff.head",),
    "SKB_NETWORK_HDR": ("sk_buff.network_header",),
    "SKB_TRANSPORT_HDR": ("sk_buff.transport_header",),
    "SKB_LEN": ("sk_buff.len",),
    "DEV_IFINDEX": ("net_device.ifindex",),
    "DEV_NAME": ("net_device.name",),
    # possible_net_t is empty without CONFIG_NET_NS
    "DEV_NET": ("net_device.nd_net.net",),
    "SK_NET": ("sock.__sk_common.skc_net.net",),
    "NET_INUM": ("net.ns.inum",),
}
OPTIONAL = frozenset({"DEV_NET", "SK_NET"})

# Where the path tracer needs more, it adds its own names here.
EXTRA_FIELDS: dict[str, tuple[str, ...]] = {}


def compute(btf: Btf, fields: dict[str, tuple[str, ...]] = FIELDS) -> dict[str, int]:
    """Byte offset of each field (-1 for an optional field this kernel lacks)."""
    out: dict[str, int] = {}
    for key, paths in fields.items():
        for path in paths:
            try:
                out[key] = btf.field(path).offset
                break
            except BtfError:
                continue
        else:
            if key not in OPTIONAL:
                raise BtfError(f"BTF of {btf.source} has none of {', '.join(paths)}")
            out[key] = -1
    return out


def fields_of(fields: dict[str, tuple[str, ...]], name: str,
              btf_path: str | Path = "/sys/kernel/btf/vmlinux") -> dict[str, int]:
    """``compute()`` of ``fields`` for the BTF at ``btf_path``, cached as ``name`` by the
    blob's hash and the fields asked for."""
    path = Path(btf_path)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise BtfError(
            f"no BTF at {path}", hint="kdbg needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        ) from None
    key = hashlib.sha256(blob + json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]
    cached = cache_dir("btf") / f"{name}-{key}.json"
    try:
        return {k: int(v) for k, v in json.loads(cached.read_text()).items()}
    except (OSError, ValueError):
        pass
    result = compute(Btf(blob, source=str(path)), fields)
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, sort_keys=True))
    tmp.replace(cached)
    return result


def for_running_kernel(btf_path: str | Path = "/sys/kernel/btf/vmlinux") -> dict[str, int]:
    """The drop program's offsets (:data:`FIELDS`) in the BTF at ``btf_path``, cached."""
    return fields_of(FIELDS, "offsets", btf_path)

# The path tracer reads L3 from skb->data on receive and the ethertype from the skb.
EXTRA_FIELDS.update({
    "SKB_DATA": ("sk_buff.data",),
    "SKB_PROTOCOL": ("sk_buff.protocol",),
})
