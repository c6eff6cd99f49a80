"""ONNX models: a protobuf ``ModelProto`` whose graph may point outside the file.

ONNX holds no Python code, but a tensor can keep its bytes in an external file
named by ``external_data`` ``location``; loaders join it to the model's folder,
so ``../../etc/passwd`` or an absolute path reads any file (CVE-2022-25882,
CVE-2024-27318). Operators from a domain other than ONNX's own need a custom-op
library, which is native code. The model is read with a bounded protobuf reader
(:mod:`bastion.scanning._protobuf`); tensor bytes are skipped, never decoded.

A location is checked as a string everywhere. For an ONNX file that is itself a file
of the folder scanned (not a container member), it is also walked in the model's folder
(on disk, or the virtual folder of a scanned tree: ``ScanContext.neighbours``),
component by component and without following anything: a symbolic link, a file
with several hard links (the same bytes as a file elsewhere, CVE-2024-27318,
GHSA-cmw6-hcpp-c6jp) or a special file is a finding, and so is a location that
does not exist, which loads nothing today and whatever is put there tomorrow.

Field numbers are those of ``onnx/onnx.proto``.
"""

from __future__ import annotations

import io
import os
import re
import stat
from typing import BinaryIO

from bastion.scanning._context import ScanContext
from bastion.scanning._protobuf import LEN, VARINT, Field, ProtobufError, ProtobufReader
from bastion.scanning._report import Severity

__all__ = ["scan_onnx"]

_FMT = "onnx"
_STANDARD = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training"})
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL
_MAX_DEPTH = 32
_SHOWN = 20
_ABSOLUTE = re.compile(r"^(?:[/\\]|[A-Za-z]:)|://")


class _TooDeep(Exception):
    pass


class _Model:
    """What an ONNX model refers to: operator domains and external data files."""

    def __init__(self, reader: ProtobufReader) -> None:
        self.r = reader
        self.ops: dict[str, set[str]] = {}
        self.functions: set[tuple[str, str]] = set()
        self.locations: dict[str, str] = {}
        """External data location -> name of the first tensor stored there."""
        self.missing_location: list[str] = []

    def model(self) -> None:
        for f in self.r.fields(0, self.r.size):
            if f.number == 7 and f.wire == LEN:  # graph
                self.graph(f, 0)
            elif f.number == 8 and f.wire == LEN:  # opset_import
                self.opset(f)
            elif f.number == 20 and f.wire == LEN:  # training_info
                for g in self.r.fields(f.value, f.end):
                    if g.number in (1, 2) and g.wire == LEN:  # initialization, algorithm
                        self.graph(g, 0)
            elif f.number == 25 and f.wire == LEN:  # functions
                self.function(f)

    def opset(self, f: Field) -> None:
        for g in self.r.fields(f.value, f.end):
            if g.number == 1 and g.wire == LEN:
                self.ops.setdefault(self.r.text(g), set())

    def function(self, f: Field) -> None:
        name = domain = ""
        for g in self.r.fields(f.value, f.end):
            if g.number == 1 and g.wire == LEN:
                name = self.r.text(g)
            elif g.number == 10 and g.wire == LEN:
                domain = self.r.text(g)
            elif g.number == 7 and g.wire == LEN:
                self.node(g, 0)
            elif g.number == 9 and g.wire == LEN:
                self.opset(g)
        self.functions.add((domain, name))

    def graph(self, f: Field, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise _TooDeep
        for g in self.r.fields(f.value, f.end):
            if g.number == 1 and g.wire == LEN:  # node
                self.node(g, depth)
            elif g.number == 5 and g.wire == LEN:  # initializer
                self.tensor(g)
            elif g.number == 15 and g.wire == LEN:  # sparse_initializer
                self.sparse(g)

    def node(self, f: Field, depth: int) -> None:
        op = domain = ""
        for g in self.r.fields(f.value, f.end):
            if g.number == 4 and g.wire == LEN:
                op = self.r.text(g)
            elif g.number == 7 and g.wire == LEN:
                domain = self.r.text(g)
            elif g.number == 5 and g.wire == LEN:  # attribute
                self.attribute(g, depth)
        self.ops.setdefault(domain, set()).add(op)

    def attribute(self, f: Field, depth: int) -> None:
        for g in self.r.fields(f.value, f.end):
            if g.wire != LEN:
                continue
            if g.number in (6, 11):  # g, graphs
                self.graph(g, depth + 1)
            elif g.number in (5, 10):  # t, tensors
                self.tensor(g)
            elif g.number in (22, 23):  # sparse_tensor, sparse_tensors
                self.sparse(g)

    def sparse(self, f: Field) -> None:
        for g in self.r.fields(f.value, f.end):
            if g.number in (1, 2) and g.wire == LEN:  # values, indices
                self.tensor(g)

    def tensor(self, f: Field) -> None:
        name, external, locations = "", False, []
        for g in self.r.fields(f.value, f.end):
            if g.number == 8 and g.wire == LEN:
                name = self.r.text(g, 200)
            elif g.number == 14 and g.wire == VARINT:
                external = g.value == _EXTERNAL
            elif g.number == 13 and g.wire == LEN:
                key = value = None
                for h in self.r.fields(g.value, g.end):
                    if h.number == 1 and h.wire == LEN:
                        key = self.r.text(h)
                    elif h.number == 2 and h.wire == LEN:
                        value = self.r.text(h)
                if key == "location" and value is not None:
                    locations.append(value)
        for location in locations:
            self.locations.setdefault(location, name)
        if external and not locations:
            self.missing_location.append(name)


def scan_onnx(ctx: ScanContext, stream: BinaryIO, member: str | None) -> None:
    start = stream.tell()
    size = stream.seek(0, io.SEEK_END) - start
    model = _Model(ProtobufReader(stream, start, size))
    try:
        model.model()
    except ProtobufError as exc:
        ctx.incomplete(f"malformed ONNX protobuf ({exc}); not scanned", format=_FMT, member=member)
    except _TooDeep:
        ctx.limit(f"graphs nested over {_MAX_DEPTH} deep", format=_FMT, member=member)
    else:
        ctx.mark_scanned(_FMT, member)
    _report_locations(ctx, model, member)
    _report_domains(ctx, model, member)


def _report_locations(ctx: ScanContext, model: _Model, member: str | None) -> None:
    on_disk = ctx.fs_path if member is None else None
    folder = os.path.dirname(os.path.abspath(on_disk)) if on_disk is not None else None
    for location, tensor in list(model.locations.items())[:_SHOWN]:
        parts = re.split(r"[/\\]", location)
        shown = f"tensor {tensor[:100]!r} reads its bytes from {location[:200]!r}"
        if _ABSOLUTE.search(location) or ".." in parts or "\x00" in location:
            ctx.add(
                "onnx.external-data",
                Severity.HIGH,
                f"{shown}, outside the model's folder: loading it reads any file "
                "(CVE-2022-25882, CVE-2024-27318)",
                format=_FMT,
                member=member,
            )
            continue
        problem = None if folder is None else _check_on_disk(ctx, folder, location)
        if problem is None:
            ctx.add(
                "onnx.external-data",
                Severity.INFO,
                f"{shown} in the model's folder; that file must be shipped and scanned with it",
                format=_FMT,
                member=member,
            )
        else:
            rule, severity, why = problem
            ctx.add(rule, severity, f"{shown}, which {why}", format=_FMT, member=member)
    for tensor in model.missing_location[:_SHOWN]:
        ctx.incomplete(
            f"tensor {tensor[:100]!r} stores its data externally but names no location",
            format=_FMT,
            member=member,
        )


def _check_on_disk(
    ctx: ScanContext, folder: str, location: str
) -> tuple[str, Severity, str] | None:
    """Walk ``location`` down from ``folder`` without following links (``ctx.neighbours``).

    Returns (rule, severity, why) for a location a loader would refuse or that reads
    something other than a plain file of the model's own; ``None`` when it names a
    regular file with one link, which is then recorded in ``ctx.raw_files``.
    """
    current = folder
    st: os.stat_result | None = None
    for part in location.split("/"):
        if part in ("", "."):
            continue
        current = os.path.join(current, part)
        try:
            st = ctx.neighbours.lstat(current)
        except (FileNotFoundError, NotADirectoryError):
            return (
                "onnx.external-data-missing",
                Severity.MEDIUM,
                "does not exist beside the model: the model does not load as shipped, "
                "and would load whatever file is put there later",
            )
        except OSError as exc:
            return ("onnx.external-data", Severity.MEDIUM, f"cannot be checked ({exc.strerror})")
        if stat.S_ISLNK(st.st_mode):
            target = ctx.neighbours.realpath(current)
            real_folder = ctx.neighbours.realpath(folder)
            if os.path.commonpath([target, real_folder]) != real_folder:
                return (
                    "onnx.external-data",
                    Severity.HIGH,
                    "is a symbolic link out of the model's folder: loading the model reads "
                    "any file (CVE-2024-27318)",
                )
            return (
                "onnx.external-data",
                Severity.MEDIUM,
                "is a symbolic link: onnx refuses it, onnxruntime follows it, so loaders "
                "disagree on what the model holds",
            )
    if st is None or not stat.S_ISREG(st.st_mode):
        return (
            "onnx.external-data",
            Severity.HIGH,
            "is not a regular file (a folder, device or FIFO): reading it fails, blocks "
            "or reads a device",
        )
    if st.st_nlink > 1:
        return (
            "onnx.external-data",
            Severity.HIGH,
            f"has {st.st_nlink} hard links: its bytes may be those of a file outside the "
            "model's folder (GHSA-cmw6-hcpp-c6jp); onnx refuses it",
        )
    ctx.raw_files.add(ctx.neighbours.realpath(current))
    return None


def _report_domains(ctx: ScanContext, model: _Model, member: str | None) -> None:
    local = {domain for domain, _ in model.functions}
    for domain, ops in sorted(model.ops.items()):
        if domain in _STANDARD:
            continue
        native = sorted(op for op in ops if (domain, op) not in model.functions)
        if not native and domain in local:
            continue  # every operator is a function defined in the model itself
        listed = ", ".join(repr(op[:60]) for op in native[:10]) or "none used"
        vendor = domain == "com.microsoft" or domain.startswith("com.microsoft.")
        why = (
            "are ONNX Runtime's contrib operators (built into onnxruntime)"
            if vendor
            else "need a custom-op library registered with the runtime, which is native code"
        )
        ctx.add(
            "onnx.custom-domain",
            Severity.LOW if vendor else Severity.MEDIUM,
            f"operators from domain {domain[:100]!r} ({listed}) {why}",
            format=_FMT,
            member=member,
        )
