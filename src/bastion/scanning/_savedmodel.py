"""TensorFlow SavedModels: graphs whose ops can reach files, the network or Python.

``saved_model.pb`` is a ``SavedModel`` protobuf: a ``MetaGraphDef`` per tag set, each
a graph of nodes and a library of functions whose bodies are more nodes. It holds no
Python, but ops can write, read or list files, connect to other hosts or call back
into the loading process (``PyFunc``), and a string can carry another serialized
graph (``DatasetFromGraph``'s input). Every node is read in place with the bounded
reader of :mod:`bastion.scanning._protobuf` (main graph, every function, functions
and ops named by ``func`` attributes, graphs in string attributes and string tensors,
nested up to ``_MAX_DEPTH``) and its op judged by :mod:`bastion.scanning._tf_ops`.

The saver rule. Roots are the save tensor and the restore op that ``saver_def``
names (roles *save* and *restore*) and everything else a loader runs or exposes
(*other*): signature tensors, ``collection_def`` node lists (TF1 init ops), the
object graph's functions and gradient functions. A main-graph node has the roles of
the roots that depend on it; a function those of its callers, and *other* if
nothing calls it. A checkpoint op that writes (``SaveV2``, ``MergeV2Checkpoints``,
...) is quiet where the roles are exactly *save* or none (a main-graph node no root
reaches, such as a stale second TF1 saver), one that reads (``RestoreV2``, ...)
where they are exactly *restore* or none; not in graphs nested in strings. Every
other op family is reported wherever it is, the saver included.

Field numbers are those of TensorFlow's ``saved_model``, ``meta_graph``, ``saver``,
``saved_object_graph``, ``graph``, ``node_def``, ``function``, ``attr_value`` and
``tensor`` protos, and of tf_keras's ``saved_metadata`` proto.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from bastion.scanning._context import ScanContext
from bastion.scanning._keras import MAX_CONFIG, audit_config
from bastion.scanning._protobuf import LEN, Field, ProtobufError, ProtobufReader
from bastion.scanning._report import Finding, Severity
from bastion.scanning._tf_ops import KNOWN, TABLE_READ, WATCHED_ATTRS, OpFamily, classify

__all__ = ["scan_tensorflow"]

_MAX_DEPTH = 24
"""Graphs in strings and attributes in attributes, nested in one another."""
_MAX_ITEMS = 2_000_000
"""Nodes, attributes and inputs read from one file."""
_NAME = 1024
_SHOWN = 100
_OP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.>/\-]*")
_SAVE, _RESTORE, _OTHER = "save", "restore", "other"


class _TooDeep(Exception):
    pass


class _TooMany(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Hit:
    rule: str
    severity: Severity
    message: str
    config_path: str


@dataclass(frozen=True, slots=True)
class _Use:
    """A node whose op is in a reported family; ``nested`` if in a graph held in a string."""

    family: OpFamily
    op: str
    path: str
    nested: bool


@dataclass(slots=True)
class _Body:
    """A main-graph node, or a library function: its flagged ops, calls and inputs."""

    path: str
    inputs: list[str] = field(default_factory=list)
    uses: list[_Use] = field(default_factory=list)
    calls: dict[str, str] = field(default_factory=dict)
    """Names that are no TensorFlow op (a function of the model, or a custom op) -> path."""
    counts: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _MetaGraph:
    nodes: dict[str, _Body] = field(default_factory=dict)
    functions: dict[str, _Body] = field(default_factory=dict)
    roots: set[str] = field(default_factory=set)
    """Main-graph nodes that signatures and collections name."""
    exposed: set[str] = field(default_factory=set)
    """Functions that the object graph or a gradient names."""
    save: str = ""
    restore: str = ""
    assets: bool = False


class _Walk:
    """Reads a SavedModel's meta graphs into :class:`_MetaGraph` summaries."""

    def __init__(self, reader: ProtobufReader) -> None:
        self.r = reader
        self.meta_graphs: list[_MetaGraph] = []
        self.mg = _MetaGraph()
        self.items = 0

    def saved_model(self) -> None:
        for f in self.r.fields(0, self.r.size):
            if f.number == 2 and f.wire == LEN:  # meta_graphs
                self.mg = _MetaGraph()
                self.meta_graphs.append(self.mg)
                self.meta_graph(f, f"meta_graphs[{len(self.meta_graphs) - 1}]")

    def meta_graph(self, f: Field, path: str) -> None:
        # A singular message that occurs twice is merged, so every occurrence is read.
        mg = self.mg
        for g in self.lens(f):
            if g.number == 2:  # graph_def
                self.graph(g, f"{path}.graph_def", 0, None, nested=False)
            elif g.number == 3:  # saver_def: save_tensor_name 2, restore_op_name 3
                for h in self.lens(g):
                    if h.number == 2:
                        mg.save = _node_of(self.r.text(h, _NAME))
                    elif h.number == 3:
                        mg.restore = _node_of(self.r.text(h, _NAME))
            elif g.number == 4:  # collection_def: value 2, node_list 1, value 1
                for k in (k for h in self.lens(g) if h.number == 2 for k in self.lens(h)):
                    if k.number == 1:
                        mg.roots.update(_node_of(name) for name in self.strings(k, 1))
            elif g.number == 5:  # signature_def: value 2, inputs 1 / outputs 2, value 2
                for k in (k for h in self.lens(g) if h.number == 2 for k in self.lens(h)):
                    if k.number in (1, 2):
                        for info in (i for i in self.lens(k) if i.number == 2):
                            self.tensor_info(info, 0)
            elif g.number == 6:  # asset_file_def
                mg.assets = True
            elif g.number == 7:  # object_graph_def: concrete_functions 2, nodes 1
                for h in self.lens(g):
                    if h.number == 2:
                        mg.exposed.update(self.strings(h, 1))
                    elif h.number == 1:  # function 6 (names 1), bare_concrete_function 8 (1)
                        for k in (k for k in self.lens(h) if k.number in (6, 8)):
                            mg.exposed.update(self.strings(k, 1))

    def tensor_info(self, f: Field, depth: int) -> None:
        """A ``TensorInfo``: name 1, coo_sparse 4 (names), composite_tensor 5 (components 2)."""
        if depth > _MAX_DEPTH:
            raise _TooDeep
        for g in self.lens(f):
            if g.number == 1:
                self.mg.roots.add(_node_of(self.r.text(g, _NAME)))
            elif g.number == 4:
                self.mg.roots.update(_node_of(self.r.text(h, _NAME)) for h in self.lens(g))
            elif g.number == 5:
                for h in (h for h in self.lens(g) if h.number == 2):
                    self.tensor_info(h, depth + 1)

    def graph(self, f: Field, path: str, depth: int, host: _Body | None, *, nested: bool) -> None:
        """A ``GraphDef``: the main graph (``host`` None), or one in a string of ``host``."""
        for g in self.lens(f):
            if g.number == 1:
                self.node(g, f"{path}.node", depth, host, nested=nested)
            elif g.number == 2:  # library: function 1, gradient 2 (gradient_func 2)
                for h in self.lens(g):
                    if h.number == 1:
                        self.function(h, f"{path}.library", depth, nested=nested)
                    elif h.number == 2:
                        self.mg.exposed.update(self.strings(h, 2))

    def function(self, f: Field, path: str, depth: int, *, nested: bool) -> None:
        """A ``FunctionDef``: signature 1 (an ``OpDef``, name 1), node_def 3, attr 5."""
        name, nodes, attrs = "", [], []
        for g in self.lens(f):
            if g.number == 1:
                names = self.strings(g, 1)
                name = names[-1] if names else name
            elif g.number == 3:
                nodes.append(g)
            elif g.number == 5:
                attrs.append(g)
        body = self.mg.functions.setdefault(name, _Body(f"{path}.function[{name[:100]!r}]"))
        for g in nodes:
            self.node(g, f"{body.path}.node_def", depth, body, nested=nested)
        for g in attrs:
            self.attr_entry(g, body, body.path, depth, nested, {})

    def node(self, f: Field, path: str, depth: int, host: _Body | None, *, nested: bool) -> None:
        """A ``NodeDef`` (name 1, op 2, input 3, attr 5), whose ops count for ``host``, or
        for the node itself in the main graph."""
        name = op = ""
        inputs, attrs = [], []
        for g in self.lens(f):
            if g.number == 1:
                name = self.r.text(g, _NAME)
            elif g.number == 2:
                op = self.r.text(g, _NAME)
            elif g.number == 3 and host is None:
                inputs.append(_node_of(self.r.text(g, _NAME)))
            elif g.number == 5:
                attrs.append(g)
        where = f"{path}[{name[:100]!r}]"
        body = self.mg.nodes.setdefault(name, _Body(where)) if host is None else host
        body.inputs.extend(inputs)
        watched: dict[str, list[str]] = {}
        for g in attrs:
            self.attr_entry(g, body, where, depth, nested, watched)
        self.use(body, op, watched, where, nested)

    def use(
        self, body: _Body, op: str, attrs: dict[str, list[str]], path: str, nested: bool
    ) -> None:
        family = classify(op, attrs)
        if family is not None:
            body.uses.append(_Use(family, op, path, nested))
        elif op not in KNOWN:
            body.calls.setdefault(op, path)
            body.counts[op] += 1

    def attr_entry(
        self,
        f: Field,
        body: _Body,
        path: str,
        depth: int,
        nested: bool,
        watched: dict[str, list[str]],
    ) -> None:
        """An ``attr`` map entry (key 1, value 2); watched keys' strings go to ``watched``."""
        key, values = "", []
        for g in self.lens(f):
            if g.number == 1:
                key = self.r.text(g, 200)
            elif g.number == 2:
                values.append(g)
        sink = watched.setdefault(key, []) if key in WATCHED_ATTRS else None
        for g in values:
            self.attr_value(g, body, f"{path}.attr[{key!r}]", depth + 1, nested, sink)

    def attr_value(
        self,
        f: Field,
        body: _Body,
        path: str,
        depth: int,
        nested: bool,
        sink: list[str] | None,
        *,
        listed: bool = False,
    ) -> None:
        """An ``AttrValue`` (list 1, s 2, tensor 8, placeholder 9, func 10), or with
        ``listed`` its ``ListValue`` (s 2, tensor 8, func 9)."""
        if depth > _MAX_DEPTH:
            raise _TooDeep
        for g in self.lens(f):
            if g.number == 1 and not listed:
                self.attr_value(g, body, f"{path}.list", depth, nested, sink, listed=True)
            elif g.number == 2:
                if sink is not None and len(sink) < 64:
                    sink.append(self.r.text(g, _NAME))
                self.string(g, body, f"{path}.s", depth, nested)
            elif g.number == 8:  # a TensorProto: string_val 8
                for h in (h for h in self.lens(g) if h.number == 8):
                    self.string(h, body, f"{path}.tensor.string_val", depth, nested)
            elif g.number == (9 if listed else 10):  # a NameAttrList: name 1, attr 2
                for h in self.lens(g):
                    if h.number == 1:
                        self.use(body, self.r.text(h, _NAME), {}, f"{path}.func", nested)
                    elif h.number == 2:
                        self.attr_entry(h, body, f"{path}.func", depth, nested, {})
            elif g.number == 9 and sink is not None and len(sink) < 64:
                sink.append("placeholder:" + self.r.text(g, 200))  # bound by the caller

    def string(self, f: Field, body: _Body, path: str, depth: int, nested: bool) -> None:
        """A string that may hold a serialized ``GraphDef``, walked as part of ``body``."""
        if self.graph_like(f):
            if depth >= _MAX_DEPTH:
                raise _TooDeep
            self.graph(f, path, depth + 1, body, nested=True)

    def graph_like(self, f: Field) -> bool:
        """Whether a string parses as a ``GraphDef`` with nodes that all name an op.

        TensorFlow refuses to import a graph with a node whose op is missing or not an
        op name, so a string that fails this cannot run as a graph either.
        """
        nodes = 0
        try:
            for g in self.r.fields(f.value, f.end) if f.length >= 4 else ():
                if g.number == 1:
                    ops = [self.r.text(h, _NAME) for h in self.lens(g) if h.number == 2]
                    if g.wire != LEN or not ops or not all(_OP_NAME.fullmatch(o) for o in ops):
                        return False
                    nodes += 1
        except ProtobufError:
            return False
        return nodes > 0

    def lens(self, f: Field) -> Iterator[Field]:
        """The length-delimited fields of a message (counted against ``_MAX_ITEMS``)."""
        for g in self.r.fields(f.value, f.end) if f.wire == LEN else ():
            if g.wire == LEN:
                self.items += 1
                if self.items > _MAX_ITEMS:
                    raise _TooMany
                yield g

    def strings(self, f: Field, number: int) -> list[str]:
        return [self.r.text(g, _NAME) for g in self.lens(f) if g.number == number]


def _node_of(tensor: str) -> str:
    """The node of an input or tensor name: ``^ctrl``, ``node:0``, ``node:output:0``."""
    return tensor.removeprefix("^").split(":", 1)[0]


def _closure(nodes: dict[str, _Body], roots: Iterable[str]) -> set[str]:
    """The main-graph nodes that ``roots`` depend on, themselves included."""
    seen: set[str] = set()
    pending = [root for root in roots if root in nodes]
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(i for i in nodes[name].inputs if i in nodes and i not in seen)
    return seen


def _roles(mg: _MetaGraph) -> list[tuple[_Body, set[str]]]:
    """Every main-graph node and function with its roles (see the module's saver rule)."""
    closures = {
        _OTHER: _closure(mg.nodes, mg.roots),
        _SAVE: _closure(mg.nodes, [mg.save]),
        _RESTORE: _closure(mg.nodes, [mg.restore]),
    }
    node_roles = {name: {r for r, nodes in closures.items() if name in nodes} for name in mg.nodes}
    reached: dict[str, set[str]] = {name: set() for name in mg.functions}
    called = {c for body in (*mg.nodes.values(), *mg.functions.values()) for c in body.calls}
    for role, nodes in closures.items():
        pending = [c for name in nodes for c in mg.nodes[name].calls]
        if role == _OTHER:
            pending += [*mg.exposed, *(reached.keys() - called)]
        while pending:
            name = pending.pop()
            if name in reached and role not in reached[name]:
                reached[name].add(role)
                pending.extend(mg.functions[name].calls)
    bodies = [(mg.nodes[name], roles) for name, roles in node_roles.items()]
    return bodies + [(mg.functions[name], roles) for name, roles in reached.items()]


def _judge(mg: _MetaGraph, customs: dict[str, tuple[str, int]]) -> Iterator[_Hit]:
    """The reported uses of ``mg``; names that are no op nor function go to ``customs``."""
    for body, roles in _roles(mg):
        for use in body.uses:
            role = use.family.saver_role
            if role is not None and not use.nested and roles <= {role}:
                continue  # the model's own saver, or what no loader runs
            severity, message = use.family.severity, f"op {use.op!r} {use.family.does}"
            if role is not None:
                message += ", outside the model's saver (saver_def)"
            if use.family is TABLE_READ and mg.assets:
                # A vocabulary table filled from the model's own assets: what lookup
                # layers (StringLookup, TextVectorization) export. Shown, not a finding.
                severity = Severity.INFO
                message += "; the model declares assets, the file it should read"
            elif use.family is TABLE_READ:
                severity = Severity.HIGH
                message += "; the model declares no assets, so the file lies outside it"
            yield _Hit(use.family.rule, severity, message, use.path)
        for name, path in body.calls.items():
            if name not in mg.functions:
                first, count = customs.get(name, (path, 0))
                customs[name] = (first, count + body.counts[name])


def _audit(reader: ProtobufReader, hits: list[_Hit]) -> bool:
    """Add to ``hits`` what the SavedModel runs that reaches outside; whether it holds any
    node or function. On ``ProtobufError``, ``_TooDeep`` or ``_TooMany`` what was read
    before is still judged."""
    walk = _Walk(reader)
    try:
        walk.saved_model()
        return any(mg.nodes or mg.functions for mg in walk.meta_graphs)
    finally:
        customs: dict[str, tuple[str, int]] = {}
        for mg in walk.meta_graphs:
            hits.extend(_judge(mg, customs))
        for op, (path, count) in sorted(customs.items()):
            message = (
                f"op {op[:100]!r} is neither a TensorFlow op nor a function of the model: "
                "loading it needs a custom kernel library (native code, tf.load_op_library); "
                f"used by {count} node(s)"
            )
            hits.append(_Hit("savedmodel.custom-op", Severity.MEDIUM, message, path))


def scan_tensorflow(ctx: ScanContext, stream: BinaryIO, member: str | None, fmt: str) -> None:
    """Scan a stream that :func:`bastion.scanning._detect.detect` named ``fmt``:
    ``savedmodel``, ``keras-metadata``, ``tf-fingerprint`` or ``savedmodel-text``."""
    start = stream.tell()
    reader = ProtobufReader(stream, start, stream.seek(0, io.SEEK_END) - start)
    hits: list[_Hit] = []
    if fmt == "savedmodel":
        try:
            graphs = _audit(reader, hits)
        except ProtobufError as exc:
            ctx.incomplete(
                f"malformed SavedModel ({exc}); the rest was not scanned", format=fmt, member=member
            )
        except (_TooDeep, _TooMany):
            why = f"nesting over {_MAX_DEPTH}, or over {_MAX_ITEMS} nodes, attributes and inputs"
            ctx.limit(f"{why}; the rest was not scanned", format=fmt, member=member)
        else:
            if graphs:
                ctx.mark_scanned(fmt, member)
            else:
                why = "a protobuf like a SavedModel but without any graph node or function"
                ctx.incomplete(f"{why}; not scanned", format=fmt, member=member)
    elif fmt == "keras-metadata":
        try:
            _keras_metadata(ctx, reader, member, hits)
        except ProtobufError as exc:
            ctx.incomplete(
                f"malformed keras_metadata.pb ({exc}); the rest was not scanned",
                format=fmt,
                member=member,
            )
        else:
            ctx.mark_scanned(fmt, member)
    elif fmt == "tf-fingerprint":
        ctx.mark_scanned(fmt, member)  # hashes and an id, all read by detect()
    else:
        why = "text-format SavedModel (saved_model.pbtxt), which TensorFlow loads like "
        why += "saved_model.pb, is not scanned; convert it to the binary form"
        ctx.add("scan.unsupported-format", Severity.MEDIUM, why, format=fmt, member=member)
    _report(ctx, fmt, member, hits)


def _keras_metadata(
    ctx: ScanContext, r: ProtobufReader, member: str | None, hits: list[_Hit]
) -> None:
    """tf_keras's ``keras_metadata.pb``: a ``SavedMetadata`` of nodes 1, each with a
    ``node_path`` 3 and the layer's Keras config as JSON ``metadata`` 5."""
    nodes = (f for f in r.fields(0, r.size) if f.number == 1 and f.wire == LEN)
    for i, f in enumerate(nodes):
        where, metadata = f"nodes[{i}]", None
        for g in (g for g in r.fields(f.value, f.end) if g.wire == LEN):
            if g.number == 3:
                where = f"nodes[{i}]({r.text(g, 200)})"
            elif g.number == 5:
                metadata = g
        if metadata is None:
            continue
        if metadata.length > MAX_CONFIG:
            ctx.limit(
                f"{where} metadata over {MAX_CONFIG} bytes", format="keras-metadata", member=member
            )
            continue
        try:
            config = json.loads(r.payload(metadata, MAX_CONFIG).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            ctx.incomplete(
                f"{where} metadata is not JSON; not scanned", format="keras-metadata", member=member
            )
            continue
        for rule, severity, message, path in audit_config(config):
            hits.append(_Hit(rule, severity, message, f"{where}.metadata.{path}".rstrip(".")))


def _report(ctx: ScanContext, fmt: str, member: str | None, hits: list[_Hit]) -> None:
    """The hits as findings, most severe first, at most ``_SHOWN``; the last counts the rest."""
    hits.sort(key=lambda hit: -hit.severity)
    for i, hit in enumerate(hits[:_SHOWN]):
        more = f" (and {len(hits) - _SHOWN} more findings in this file)"
        message = hit.message + (more if i == _SHOWN - 1 and len(hits) > _SHOWN else "")
        ctx.findings.append(
            Finding(
                hit.rule, hit.severity, message, ctx.path, fmt, member, config_path=hit.config_path
            )
        )
