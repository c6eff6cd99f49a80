"""GGUF files (llama.cpp): a typed key-value header, tensor descriptions, then raw data.

GGUF holds no code, but its metadata does: ``tokenizer.chat_template`` is a
Jinja2 template that llama-cpp-python, vLLM and SGLang render, and a template
that reaches Python objects through dunder attributes escapes Jinja's sandbox
(CVE-2024-34359, CVE-2026-5760). The header is read with every length checked
against the file before anything is read; tensor bytes are never read.
"""

from __future__ import annotations

import io
import re
import struct
from typing import BinaryIO

from bastion.scanning._context import ScanContext
from bastion.scanning._report import Finding, Severity

__all__ = ["scan_gguf", "template_threats"]

_FMT = "gguf"
_STRING, _ARRAY = 8, 9
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B"}
_SCALAR |= {10: "<Q", 11: "<q", 12: "<d"}
#: Longest key (the specification's limit) and longest template held in memory.
_MAX_KEY = 1 << 16
_MAX_TEXT = 16 << 20
_MAX_DIMS = 8
_MAX_ARRAY_DEPTH = 2

#: Jinja2 constructs that benign chat templates do not use and sandbox escapes do.
_THREATS = tuple(
    (re.compile(pattern), why)
    for pattern, why in (
        (r"__[A-Za-z]\w{0,30}|[A-Za-z]__(?!\w)", "dunder attribute"),
        (r"_TemplateReference", "the template's own context"),
        (r"\|\s*attr\b|\battr\s*\(", "the attr filter"),
        (r"\\x[0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8}|\\[0-7]{3}", "escaped characters"),
        (r"%c", "characters built from codes"),
        (r"\b(?:lipsum|cycler|joiner|url_for|get_flashed_messages)\b", "a Jinja/Flask global"),
        (r"\b(?:request|config|self)\s*[.\[|]", "a framework object"),
        (r"\b(?:os|sys|subprocess|builtins|importlib|posix)\s*\.", "a system module"),
        (
            r"\b(?:popen|system|eval|exec|compile|getattr|setattr|globals|locals|open)\s*\(",
            "a Python function that runs code or opens files",
        ),
        (r"\{%[-+]?\s*(?:import|include|extends|from)\b", "loading another template"),
    )
)


class _Malformed(ValueError):
    pass


def template_threats(text: str) -> list[str]:
    """The sandbox-escape constructs in a Jinja2 template, each shown with its match."""
    found = []
    for pattern, why in _THREATS:
        match = pattern.search(text)
        if match is not None:
            found.append(f"{why} ({match.group(0)[:40]!r})")
    return found


def scan_gguf(ctx: ScanContext, stream: BinaryIO, member: str | None) -> None:
    start = stream.tell()
    size = stream.seek(0, io.SEEK_END) - start
    stream.seek(start)
    reader = _Reader(stream, start, size)
    try:
        _scan(ctx, reader, member)
    except _Malformed as exc:
        ctx.add(
            "gguf.header-invalid",
            Severity.MEDIUM,
            f"malformed GGUF header: {exc}",
            format=_FMT,
            member=member,
            offset=reader.pos,
        )
        ctx.incomplete("GGUF header could not be read; not scanned", format=_FMT, member=member)


def _scan(ctx: ScanContext, r: _Reader, member: str | None) -> None:
    if r.take(4) != b"GGUF":
        raise _Malformed("no GGUF magic")
    (version,) = r.unpack("<I")
    if version not in (2, 3):
        raise _Malformed(f"version {version} is not read by current loaders")
    n_tensors, n_kv = r.unpack("<QQ")
    if n_kv * 13 > r.left() or n_tensors * 24 > r.left():
        raise _Malformed(f"{n_kv} keys and {n_tensors} tensors cannot fit in the file")
    alignment = 32
    for _ in range(n_kv):
        key = r.string(_MAX_KEY, "key").decode("utf-8", "replace")
        (kind,) = r.unpack("<I")
        if key == "general.alignment" and kind == 4:
            (alignment,) = r.unpack("<I")
            if alignment == 0 or alignment & (alignment - 1):
                raise _Malformed(f"general.alignment {alignment} is not a power of two")
            continue
        for text in _value(r, kind, keep="template" in key.lower(), depth=0):
            threats = template_threats(text)
            if threats:
                message = (
                    f"template uses {'; '.join(threats)}: Jinja2 sandbox-escape constructs, "
                    "run when the template is rendered (CVE-2024-34359, CVE-2026-5760)"
                )
                ctx.findings.append(
                    Finding(
                        rule_id="gguf.chat-template",
                        severity=Severity.HIGH,
                        message=message,
                        path=ctx.path,
                        format=_FMT,
                        member=member,
                        config_path=key[:200],
                    )
                )
    ctx.mark_scanned(_FMT, member)
    _tensors(r, n_tensors, alignment)


def _value(r: _Reader, kind: int, *, keep: bool, depth: int) -> list[str]:
    """Read (or skip) one value; return the strings kept for checking."""
    if kind in _SCALAR:
        r.unpack(_SCALAR[kind])
        return []
    if kind == _STRING:
        raw = r.string(_MAX_TEXT if keep else None, "string")
        return [raw.decode("utf-8", "replace")] if keep else []
    if kind != _ARRAY:
        raise _Malformed(f"unknown value type {kind}")
    if depth >= _MAX_ARRAY_DEPTH:
        raise _Malformed("arrays nested too deep")
    item, count = r.unpack("<IQ")
    if item in _SCALAR:
        r.skip(count * struct.calcsize(_SCALAR[item]))
        return []
    if count * 8 > r.left():
        raise _Malformed(f"array of {count} items cannot fit in the file")
    kept: list[str] = []
    for _ in range(count):
        kept.extend(_value(r, item, keep=keep, depth=depth + 1))
    return kept


def _tensors(r: _Reader, count: int, alignment: int) -> None:
    offsets = []
    for _ in range(count):
        r.string(_MAX_KEY, "tensor name")
        (n_dims,) = r.unpack("<I")
        if n_dims > _MAX_DIMS:
            raise _Malformed(f"tensor with {n_dims} dimensions")
        r.skip(8 * n_dims)
        _, offset = r.unpack("<IQ")
        offsets.append(offset)
    data = r.pos + (-r.pos % alignment)
    for offset in offsets:
        if data + offset > r.size:
            raise _Malformed(f"tensor data at offset {offset} lies past the end of the file")


class _Reader:
    """Reads a GGUF header, checking every length against the bytes left first."""

    def __init__(self, stream: BinaryIO, start: int, size: int) -> None:
        self.stream, self.start, self.size, self.pos = stream, start, size, 0

    def left(self) -> int:
        return self.size - self.pos

    def take(self, n: int) -> bytes:
        if n > self.left():
            raise _Malformed(f"needs {n} bytes at offset {self.pos}, past the end of the file")
        data = self.stream.read(n)
        if len(data) != n:
            raise _Malformed("file ended early")
        self.pos += n
        return data

    def skip(self, n: int) -> None:
        if n > self.left():
            raise _Malformed(f"skips {n} bytes at offset {self.pos}, past the end of the file")
        self.pos += n
        self.stream.seek(self.start + self.pos)

    def unpack(self, layout: str) -> tuple[int, ...]:
        return struct.unpack(layout, self.take(struct.calcsize(layout)))

    def string(self, limit: int | None, what: str) -> bytes:
        (n,) = self.unpack("<Q")
        if limit is None:
            self.skip(n)
            return b""
        if n > limit:
            raise _Malformed(f"{what} of {n} bytes is longer than {limit}")
        return self.take(n)
