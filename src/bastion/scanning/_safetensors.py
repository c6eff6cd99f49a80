"""safetensors files: an 8-byte header length, a JSON header, then raw tensor bytes.

The format holds no code, so the risk is a header that the Rust loader and
other readers (or this scanner) understand differently: offsets that leave
room for hidden bytes, overlapping tensors, sizes that do not match the
declared shape and dtype, unknown dtypes, duplicate keys. The header is
checked as ``safetensors`` itself validates it; tensor bytes are never read.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any, BinaryIO

from bastion.scanning._context import ScanContext
from bastion.scanning._report import Severity

__all__ = ["MAX_HEADER", "scan_safetensors"]

#: The largest header the ``safetensors`` library itself accepts.
MAX_HEADER = 100 << 20

#: Bits per element of every dtype the safetensors specification defines.
_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

#: Findings of one rule shown per file; the rest are counted in the last one.
_SHOWN = 10

_FMT = "safetensors"


class _DuplicateKey(ValueError):
    pass


def scan_safetensors(ctx: ScanContext, stream: BinaryIO, member: str | None) -> None:
    start = stream.tell()
    size = stream.seek(0, io.SEEK_END) - start
    stream.seek(start)
    prefix = stream.read(8)
    if len(prefix) < 8:
        _invalid(ctx, member, "file is shorter than the 8-byte header length")
        return
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_HEADER:
        ctx.limit(f"safetensors header of {length} bytes is too large", format=_FMT, member=member)
        return
    if length > size - 8:
        _invalid(ctx, member, f"header length {length} runs past the end of the file")
        return
    header, problem = _parse(stream.read(length))
    if header is None:
        _invalid(ctx, member, problem)
        return
    ctx.mark_scanned(_FMT, member)
    _check_tensors(ctx, member, header, data_size=size - 8 - length, data_start=8 + length)


def _parse(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "header is not UTF-8"
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _DuplicateKey as exc:
        return None, f"header repeats the key {str(exc)[:100]!r}; readers disagree on which wins"
    except (ValueError, RecursionError):
        return None, "header is not valid JSON"
    if not isinstance(value, dict):
        return None, "header is not a JSON object"
    metadata = value.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return None, "__metadata__ is not an object of strings"
    return value, ""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, val in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = val
    return out


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _check_tensors(
    ctx: ScanContext, member: str | None, header: dict[str, Any], *, data_size: int, data_start: int
) -> None:
    spans: list[tuple[int, int, str]] = []
    layout: list[str] = []
    dtypes: list[str] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        entry = _entry(info)
        if entry is None:
            _invalid(ctx, member, f"tensor {name[:100]!r} has no valid dtype, shape and offsets")
            return
        dtype, shape, begin, end = entry
        if end > data_size:
            layout.append(f"{name[:100]!r} ends at {end}, past the {data_size} data bytes")
        bits = _BITS.get(dtype)
        if bits is None:
            dtypes.append(f"{name[:100]!r} has unknown dtype {dtype[:40]!r}")
        elif _bits(shape, bits, cap=(end - begin) * 8) != (end - begin) * 8:
            layout.append(
                f"{name[:100]!r} spans {end - begin} bytes, which is not what "
                f"{len(shape)} dimensions {shape[:8]} of {dtype} need"
            )
        spans.append((begin, end, name))
    layout.extend(_overlaps_and_gaps(spans, data_size))
    _report(ctx, member, "safetensors.offsets", Severity.HIGH, layout, data_start)
    _report(ctx, member, "safetensors.dtype", Severity.MEDIUM, dtypes, data_start)


def _entry(info: object) -> tuple[str, list[int], int, int] | None:
    if not isinstance(info, dict):
        return None
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or not isinstance(shape, list) or not isinstance(offsets, list):
        return None
    if not all(_is_count(n) for n in shape) or len(offsets) != 2:
        return None
    begin, end = offsets
    if not _is_count(begin) or not _is_count(end) or begin > end:
        return None
    return dtype, shape, begin, end


def _bits(shape: list[int], bits: int, *, cap: int) -> int:
    """Bits the tensor needs, or ``cap + 1`` as soon as it is known to need more."""
    if 0 in shape:
        return 0
    total = bits
    for n in shape:
        total *= n
        if total > cap:
            return cap + 1
    return total


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _overlaps_and_gaps(spans: list[tuple[int, int, str]], data_size: int) -> list[str]:
    """Tensors must tile the data exactly: from 0, without overlap or gap, to the end."""
    problems: list[str] = []
    at, prev = 0, None
    for begin, end, name in sorted(spans):
        if begin < at:
            problems.append(f"{name[:100]!r} overlaps {prev!r} (bytes {begin}-{at})")
        elif begin > at:
            problems.append(f"{begin - at} unused bytes before {name[:100]!r} may hide a payload")
        at, prev = max(at, end), name[:100]
    if at < data_size:
        problems.append(f"{data_size - at} bytes after the last tensor may hide a payload")
    return problems


def _report(
    ctx: ScanContext,
    member: str | None,
    rule: str,
    severity: Severity,
    problems: list[str],
    offset: int,
) -> None:
    for i, problem in enumerate(problems[:_SHOWN]):
        more = len(problems) - _SHOWN
        suffix = f" (and {more} more)" if i == _SHOWN - 1 and more > 0 else ""
        ctx.add(rule, severity, problem + suffix, format=_FMT, member=member, offset=offset)


def _invalid(ctx: ScanContext, member: str | None, why: str) -> None:
    ctx.add(
        "safetensors.header-invalid",
        Severity.HIGH,
        f"{why}; the loader refuses it or reads it differently (tensors not checked)",
        format=_FMT,
        member=member,
        offset=0,
    )
    ctx.incomplete("safetensors header could not be read; not scanned", format=_FMT, member=member)
