"""A small reader for the kernel's BTF (``/sys/kernel/btf/vmlinux``).

kdbg compiles its eBPF programs against whatever kernel headers are at hand,
which need not match the running kernel (6.1 headers on a 6.18 host). Every
struct field the programs read is therefore located here, from the running
kernel's own type information: member offsets, enum values (drop reasons) and
function prototypes (for the breakpoint guard).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from kdbg.errors import BtfError

BTF_MAGIC = 0xEB9F

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION = 1, 2, 3, 4, 5
KIND_ENUM, KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST = 6, 7, 8, 9, 10
KIND_RESTRICT, KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC = 11, 12, 13, 14, 15
KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 16, 17, 18, 19

_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)
_KIND_NAMES = {KIND_STRUCT: "struct", KIND_UNION: "union", KIND_ENUM: "enum",
               KIND_ENUM64: "enum", KIND_FWD: "struct"}


@dataclass(frozen=True)
class Field:
    """Where a (possibly nested) member lives: byte offset from the outer struct, size."""

    path: str
    offset: int
    size: int
    type_name: str


@dataclass(frozen=True)
class Param:
    """One parameter of a kernel function, with its C type as text."""

    name: str
    type_name: str


class Btf:
    """Parsed BTF. Type records are indexed once; lookups decode on demand."""

    def __init__(self, data: bytes, *, source: str = "<bytes>") -> None:
        self.source = source
        if len(data) < 24:
            raise BtfError(f"{source}: too short to be BTF")
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BtfError(f"{source}: not BTF (magic 0x{magic:x})")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._data = data
        self._types_start = hdr_len + type_off
        self._strs = data[hdr_len + str_off : hdr_len + str_off + str_len]
        self._offsets: list[int] = [0]  # type id 0 is void
        self._index(self._types_start, self._types_start + type_len)

    @classmethod
    def load(cls, path: str | Path = "/sys/kernel/btf/vmlinux") -> Btf:
        """Read a raw BTF file (the running kernel's by default)."""
        try:
            return cls(Path(path).read_bytes(), source=str(path))
        except FileNotFoundError as err:
            raise BtfError(
                f"no BTF at {path}", hint="kdbg needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
            ) from err
        except OSError as err:
            raise BtfError(f"cannot read {path}: {err.strerror}") from err

    # -- raw records --------------------------------------------------------

    def _index(self, pos: int, end: int) -> None:
        data, unpack = self._data, struct.unpack_from
        offsets = self._offsets
        while pos < end:
            offsets.append(pos)
            info = unpack("<I", data, pos + 4)[0]
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            pos += 12
            if kind in (KIND_INT, KIND_VAR, KIND_DECL_TAG):
                pos += 4
            elif kind == KIND_ARRAY:
                pos += 12
            elif kind in (KIND_STRUCT, KIND_UNION, KIND_ENUM64, KIND_DATASEC):
                pos += 12 * vlen
            elif kind in (KIND_ENUM, KIND_FUNC_PROTO):
                pos += 8 * vlen
            elif kind not in (KIND_PTR, KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST,
                              KIND_RESTRICT, KIND_FUNC, KIND_FLOAT, KIND_TYPE_TAG):
                raise BtfError(f"{self.source}: unknown BTF kind {kind} at type {len(offsets)-1}")

    def _str(self, off: int) -> str:
        end = self._strs.index(b"\0", off)
        return self._strs[off:end].decode()

    def _rec(self, tid: int) -> tuple[str, int, int, bool, int, int]:
        """(name, kind, vlen, kind_flag, size_or_type, record offset) of type ``tid``."""
        pos = self._offsets[tid]
        name_off, info, size_or_type = struct.unpack_from("<III", self._data, pos)
        return (self._str(name_off), (info >> 24) & 0x1F, info & 0xFFFF,
                bool(info >> 31), size_or_type, pos)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @cached_property
    def _names(self) -> dict[tuple[int, str], int]:
        out: dict[tuple[int, str], int] = {}
        data, strs = self._data, self._strs
        for tid in range(1, len(self._offsets)):
            name_off, info = struct.unpack_from("<II", data, self._offsets[tid])
            if name_off:
                kind = (info >> 24) & 0x1F
                name = strs[name_off : strs.index(b"\0", name_off)].decode()
                key = (kind, name)
                # A forward declaration never shadows the full definition.
                if key not in out:
                    out[key] = tid
        return out

    # -- lookups ------------------------------------------------------------

    def find(self, kind: int, name: str) -> int:
        """Type id of the named struct/union/enum/func/typedef."""
        tid = self._names.get((kind, name))
        if tid is None:
            raise BtfError(f"{self.source}: no {_KIND_NAMES.get(kind, 'type')} {name} in BTF")
        return tid

    def has(self, kind: int, name: str) -> bool:
        return (kind, name) in self._names

    def resolve(self, tid: int) -> int:
        """Strip typedefs and qualifiers."""
        while tid:
            _, kind, _, _, ref, _ = self._rec(tid)
            if kind not in _MODIFIERS:
                return tid
            tid = ref
        return tid

    def size_of(self, tid: int) -> int:
        tid = self.resolve(tid)
        if tid == 0:
            return 0
        _, kind, _, _, size, pos = self._rec(tid)
        if kind == KIND_PTR:
            return 8
        if kind == KIND_ARRAY:
            elem, _idx, nelems = struct.unpack_from("<III", self._data, pos + 12)
            return self.size_of(elem) * nelems
        return size

    def type_name(self, tid: int) -> str:
        """C spelling of a type, enough to read (``struct sk_buff *``, ``u32``)."""
        if tid == 0:
            return "void"
        name, kind, _, _, ref, pos = self._rec(tid)
        if kind == KIND_PTR:
            return self.type_name(ref) + " *"
        if kind == KIND_ARRAY:
            elem, _idx, nelems = struct.unpack_from("<III", self._data, pos + 12)
            return f"{self.type_name(elem)}[{nelems}]"
        if kind == KIND_CONST:
            return "const " + self.type_name(ref)
        if kind in (KIND_VOLATILE, KIND_RESTRICT, KIND_TYPE_TAG):
            return self.type_name(ref)
        if kind == KIND_FUNC_PROTO:
            return "function"
        prefix = _KIND_NAMES.get(kind)
        return f"{prefix} {name or '(anon)'}" if prefix else (name or "(anon)")

    def members(self, tid: int) -> list[tuple[str, int, int, int]]:
        """(name, type id, bit offset, bitfield size) of a struct or union's members."""
        tid = self.resolve(tid)
        _, kind, vlen, kflag, _, pos = self._rec(tid)
        if kind not in (KIND_STRUCT, KIND_UNION):
            raise BtfError(f"{self.type_name(tid)} is not a struct or union")
        out = []
        for i in range(vlen):
            name_off, mtype, off = struct.unpack_from("<III", self._data, pos + 12 + 12 * i)
            bits, bitsize = (off & 0xFFFFFF, off >> 24) if kflag else (off, 0)
            out.append((self._str(name_off), mtype, bits, bitsize))
        return out

    def _member(self, tid: int, name: str, bitfield: bool = False) -> tuple[int, int] | None:
        """(type id, bit offset) of ``name`` in ``tid``, looking through anonymous members
        (a bitfield only when ``bitfield``)."""
        for mname, mtype, bits, bitsize in self.members(tid):
            if mname == name:
                if bitsize and not bitfield:
                    raise BtfError(f"{name} is a bitfield; kdbg reads whole bytes only")
                return mtype, bits
            if not mname:
                inner = self.resolve(mtype)
                if self._rec(inner)[1] in (KIND_STRUCT, KIND_UNION):
                    found = self._member(inner, name, bitfield)
                    if found is not None:
                        return found[0], bits + found[1]
        return None

    def field(self, path: str) -> Field:
        """Locate ``"sk_buff.dev"`` or a nested ``"net.ns.inum"``; embedded structs only."""
        struct_name, *names = path.split(".")
        if not names:
            raise BtfError(f"field path {path!r} names no member")
        tid = self.find(KIND_STRUCT, struct_name)
        bits = 0
        for name in names:
            found = self._member(tid, name)
            if found is None:
                raise BtfError(f"{self.source}: struct {struct_name} has no member {path}")
            tid, moff = found
            bits += moff
        if bits % 8:
            raise BtfError(f"{path} is not byte aligned")
        return Field(path, bits // 8, self.size_of(tid), self.type_name(tid))

    def flag_bit(self, path: str) -> int:
        """The bit offset of one-level member ``"sk_buff.tc_at_ingress"`` in its struct,
        bitfield or not (on little-endian x86, bit N is bit N % 8 of byte N // 8)."""
        struct_name, name = path.split(".", 1)
        found = self._member(self.find(KIND_STRUCT, struct_name), name, bitfield=True)
        if found is None:
            raise BtfError(f"{self.source}: struct {struct_name} has no member {path}")
        return found[1]

    def enum(self, name: str) -> dict[str, int]:
        """Values of ``enum NAME`` in declaration order."""
        tid = self._names.get((KIND_ENUM, name)) or self._names.get((KIND_ENUM64, name))
        if tid is None:
            raise BtfError(f"{self.source}: no enum {name} in BTF")
        _, kind, vlen, kflag, _, pos = self._rec(tid)
        out: dict[str, int] = {}
        if kind == KIND_ENUM:
            fmt = "<Ii" if kflag else "<II"
            for i in range(vlen):
                name_off, val = struct.unpack_from(fmt, self._data, pos + 12 + 8 * i)
                out[self._str(name_off)] = val
        else:
            for i in range(vlen):
                name_off, lo, hi = struct.unpack_from("<III", self._data, pos + 12 + 12 * i)
                out[self._str(name_off)] = (hi << 32) | lo
        return out

    def func_params(self, name: str) -> list[Param]:
        """Parameters of kernel function ``name`` (BTF ``FUNC`` → ``FUNC_PROTO``)."""
        fid = self.find(KIND_FUNC, name)
        proto = self._rec(fid)[4]
        _, kind, vlen, _, _, pos = self._rec(proto)
        if kind != KIND_FUNC_PROTO:
            raise BtfError(f"{name}: BTF FUNC without a prototype")
        params = []
        for i in range(vlen):
            name_off, ptype = struct.unpack_from("<II", self._data, pos + 12 + 8 * i)
            params.append(Param(self._str(name_off), self.type_name(ptype)))
        return params

    def tracepoint_proto(self, tracepoint: str) -> tuple[int, list[str]]:
        """The id of raw tracepoint ``tracepoint``'s ``btf_trace_`` typedef and the C
        types of the arguments a program gets (its prototype without ``void *__data``)."""
        tid = self.find(KIND_TYPEDEF, f"btf_trace_{tracepoint}")
        proto = self.resolve(self._rec(self.resolve(tid))[4])
        _, kind, vlen, _, _, pos = self._rec(proto)
        if kind != KIND_FUNC_PROTO:
            raise BtfError(f"btf_trace_{tracepoint} is not a function pointer")
        types = [self.type_name(struct.unpack_from("<II", self._data, pos + 12 + 8 * i)[1])
                 for i in range(vlen)]
        return tid, types[1:]
