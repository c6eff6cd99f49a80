"""TensorFlow SavedModel samples (scanner-threats.md technique 36), built without TensorFlow.

A small protobuf encoder writes ``saved_model.pb`` bytes with the field numbers of
TensorFlow's ``saved_model``, ``meta_graph``, ``saver``, ``saved_object_graph``,
``graph``, ``node_def``, ``function``, ``op_def``, ``attr_value`` and ``tensor`` protos,
laid out as ``tf.saved_model.save`` (TF2) and ``SavedModelBuilder`` (TF1) lay them out
(checked against files written by TensorFlow 2.21): variables as ``VarHandleOp`` nodes,
a serving signature that calls a signature wrapper that calls the model's function,
a ``__saved_model_init_op``, and the saver, ``saver_filename`` feeding two
``StatefulPartitionedCall`` nodes whose ``_traced_save`` and ``_traced_restore``
functions hold ``SaveV2``, ``MergeV2Checkpoints`` and ``RestoreV2``.

Malicious samples put one op family where the loader or the serving signature runs
it; the inert payload writes, prints or saves to the sample's marker path. Those
marked ``runs_at_load`` are TF1 graphs complete enough for TensorFlow to load: with
TensorFlow 2.21, ``tf.saved_model.load`` and ``tf.compat.v1.saved_model.load`` both
created their marker. The others (TF2 layouts whose nodes carry only the attributes
the scanner reads, and the benign ones) test the scanner only: TensorFlow 2.21 does
not load them as they are (a restore tensor or a node attribute is missing).

The samples are in the corpus with the ``tensorflow`` loader, which is in
``NOT_INSTALLED``: TensorFlow is no dependency of the project, so the corpus tests do
not load them; they check statically that each ``runs_at_load`` sample aims its payload
at its own marker. ``_load.py`` loads them where TensorFlow is installed: run with
TensorFlow 2.21, it created the markers of both ``runs_at_load`` samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.scanning_corpus._sample import Payload, Sample

__all__ = [
    "CALL_FN",
    "RESTORE_FN",
    "SAVEDMODEL_BENIGN",
    "SAVEDMODEL_MALICIOUS",
    "SAVE_FN",
    "Model",
    "SavedModelRecipe",
    "attr",
    "call",
    "const",
    "func",
    "func_list",
    "function",
    "graph",
    "integer",
    "length",
    "list_s",
    "meta_graph",
    "node",
    "saved_model",
    "strings",
    "tf1_model",
    "write_savedmodel_benign",
    "write_savedmodel_malicious",
]

LOADER = "tensorflow"

DT_FLOAT, DT_STRING, DT_RESOURCE, DT_VARIANT = 1, 7, 20, 21
Attrs = Mapping[str, bytes]

# --- wire format ------------------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def length(number: int, payload: bytes | str) -> bytes:
    """A length-delimited field."""
    data = payload.encode() if isinstance(payload, str) else payload
    return varint(number << 3 | 2) + varint(len(data)) + data


def integer(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def entry(number: int, key: str, value: bytes) -> bytes:
    """A map entry whose value is a message."""
    return length(number, length(1, key) + length(2, value))


# --- AttrValue ----------------------------------------------------------------------------


def attr(*, s: bytes | str | None = None, dtype: int | None = None, placeholder: str = "") -> bytes:
    """An ``AttrValue``: s (2), type (6) or placeholder (9)."""
    if s is not None:
        return length(2, s)
    if dtype is not None:
        return integer(6, dtype)
    return length(9, placeholder)


def func(name: str, attrs: Attrs | None = None) -> bytes:
    """An ``AttrValue`` holding a ``NameAttrList`` (func, 10)."""
    body = length(1, name) + b"".join(entry(2, k, v) for k, v in (attrs or {}).items())
    return length(10, body)


def func_list(*names: str) -> bytes:
    """An ``AttrValue`` list (1) of ``NameAttrList`` (ListValue.func, 9)."""
    return length(1, b"".join(length(9, length(1, name)) for name in names))


def strings(*values: bytes | str) -> bytes:
    """An ``AttrValue`` holding a DT_STRING ``TensorProto`` (tensor 8; string_val 8)."""
    shape = length(2, length(2, integer(1, len(values)))) if len(values) != 1 else length(2, b"")
    return length(8, integer(1, DT_STRING) + shape + b"".join(length(8, v) for v in values))


def list_s(*values: str) -> bytes:
    return length(1, b"".join(length(2, v) for v in values))


def dataset_attrs(**extra: bytes) -> dict[str, bytes]:
    """``output_types`` [DT_STRING] and ``output_shapes`` [scalar] (ListValue type 6, shape 7)."""
    types = length(1, length(6, varint(DT_STRING)))
    return {"output_types": types, "output_shapes": length(1, length(7, b"")), **extra}


# --- graphs -------------------------------------------------------------------------------


def node(name: str, op: str, inputs: Iterable[str] = (), attrs: Attrs | None = None) -> bytes:
    """A ``NodeDef``: name 1, op 2, input 3, attr 5."""
    body = length(1, name) + length(2, op) + b"".join(length(3, i) for i in inputs)
    return body + b"".join(entry(5, k, v) for k, v in (attrs or {}).items())


def const(name: str, *values: str) -> bytes:
    return node(name, "Const", (), {"dtype": attr(dtype=DT_STRING), "value": strings(*values)})


def call(name: str, target: str, inputs: Iterable[str] = ()) -> bytes:
    return node(name, "StatefulPartitionedCall", inputs, {"f": func(target), "config": attr(s="")})


def function(
    name: str,
    nodes: Iterable[bytes],
    args: Iterable[tuple[str, int]] = (),
    ret: Mapping[str, str] | None = None,
    outputs: Iterable[tuple[str, int]] = (),
) -> bytes:
    """A ``FunctionDef``: signature 1 (an ``OpDef``: name 1, input_arg 2, output_arg 3; an
    ``ArgDef`` is name 1, type 3), node_def 3, ret 4."""
    signature = length(1, name) + b"".join(length(2, length(1, a) + integer(3, t)) for a, t in args)
    signature += b"".join(length(3, length(1, a) + integer(3, t)) for a, t in outputs)
    body = length(1, signature) + b"".join(length(3, n) for n in nodes)
    return body + b"".join(length(4, length(1, k) + length(2, v)) for k, v in (ret or {}).items())


def graph(nodes: Iterable[bytes], functions: Iterable[bytes] = ()) -> bytes:
    """A ``GraphDef``: node 1, library 2 (function 1), versions 4 (producer 1)."""
    library = b"".join(length(1, f) for f in functions)
    body = b"".join(length(1, n) for n in nodes)
    return body + (length(2, library) if library else b"") + length(4, integer(1, 2164))


def saved_model(*meta_graphs: bytes) -> bytes:
    """A ``SavedModel``: schema version 1, then the meta graphs (field 2)."""
    return integer(1, 1) + b"".join(length(2, mg) for mg in meta_graphs)


def meta_graph(
    graph_def: bytes,
    *,
    saver: tuple[str, str, str] | None,
    signatures: Mapping[str, tuple[str, str]],
    exposed: Iterable[str] = (),
    assets: Iterable[str] = (),
    collections: Mapping[str, Iterable[str]] | None = None,
) -> bytes:
    """A ``MetaGraphDef``: meta_info_def 1 (tags 4, version 5), graph_def 2, saver_def 3
    (filename 1, save 2, restore 3, version 7), collection_def 4 (node_list 1: value 1),
    signature_def 5 (inputs 1, outputs 2, method 3), asset_file_def 6, object_graph_def 7
    (concrete_functions 2)."""
    info = length(4, "serve") + length(5, "2.21.0") + integer(7, 1)
    out = length(1, info) + length(2, graph_def)
    if saver is not None:
        out += length(3, b"".join(length(i, n) for i, n in enumerate(saver, 1)) + integer(7, 2))
    for key, names in (collections or {}).items():
        out += entry(4, key, length(1, b"".join(length(1, name) for name in names)))
    for key, (inp, outp) in signatures.items():
        tensors = (entry(1, "x", length(1, inp)) if inp else b"") + entry(2, "y", length(1, outp))
        out += entry(5, key, tensors + length(3, "tensorflow/serving/predict"))
    for name in assets:
        out += length(6, length(1, length(1, "asset_path_initializer:0")) + length(2, name))
    concrete = b"".join(entry(2, name, b"") for name in exposed)
    return out + (length(7, concrete) if concrete else b"")


# --- the TF2 layout -------------------------------------------------------------------------

SAVE_FN, RESTORE_FN = "__inference__traced_save_64", "__inference__traced_restore_79"
CALL_FN, WRAPPER_FN = "__inference___call___20", "__inference_signature_wrapper___call___30"


def _traced_save(extra: Iterable[bytes]) -> bytes:
    nodes = [
        node("StaticRegexFullMatch", "StaticRegexFullMatch", ["file_prefix"]),
        const("Const", ".part"),
        const("Const_1", "_temp/part"),
        node("Select", "Select", ["StaticRegexFullMatch:output:0", "Const:output:0"]),
        node("StringJoin", "StringJoin", ["file_prefix", "Select:output:0"]),
        node("Read/ReadVariableOp", "ReadVariableOp", ["read_w"]),
        node("num_shards", "Const"),
        node("ShardedFilename", "ShardedFilename", ["StringJoin:output:0", "num_shards:output:0"]),
        const(
            "SaveV2/tensor_names", "w/.ATTRIBUTES/VARIABLE_VALUE", "_CHECKPOINTABLE_OBJECT_GRAPH"
        ),
        node(
            "SaveV2",
            "SaveV2",
            ["ShardedFilename:filename:0", "SaveV2/tensor_names:output:0", "savev2_const"],
        ),
        node("Pack", "Pack", ["ShardedFilename:filename:0", "^SaveV2"]),
        node("MergeV2Checkpoints", "MergeV2Checkpoints", ["Pack:output:0", "file_prefix"]),
        node("Identity", "Identity", ["file_prefix", "^MergeV2Checkpoints"]),
        *extra,
    ]
    args = [("file_prefix", DT_STRING), ("read_w", DT_RESOURCE), ("savev2_const", DT_STRING)]
    return function(SAVE_FN, nodes, args, {"identity": "Identity:output:0"})


def _traced_restore(extra: Iterable[bytes]) -> bytes:
    nodes = [
        const("RestoreV2/tensor_names", "w/.ATTRIBUTES/VARIABLE_VALUE"),
        node("RestoreV2", "RestoreV2", ["file_prefix", "RestoreV2/tensor_names:output:0"]),
        node("Identity", "Identity", ["RestoreV2:tensors:0"]),
        node("AssignVariableOp", "AssignVariableOp", ["assignvariableop_w", "Identity:output:0"]),
        node("Identity_1", "Identity", ["file_prefix", "^AssignVariableOp"]),
        *extra,
    ]
    args = [("file_prefix", DT_STRING), ("assignvariableop_w", DT_RESOURCE)]
    return function(RESTORE_FN, nodes, args, {"identity_1": "Identity_1:output:0"})


@dataclass(frozen=True)
class Model:
    """A TF2 ``tf.saved_model.save`` layout, with hooks to add nodes where they run.

    ``serving`` nodes go into the model's function (run by the serving signature),
    ``init`` nodes into the main graph, the init op (run at load) depending on those named
    by ``init_deps``; ``save``/``restore`` nodes go into the traced save and restore
    functions, and ``main`` nodes into the main graph, unconnected unless the restore op
    depends on them (``restore_inputs``).
    """

    serving: tuple[bytes, ...] = ()
    init: tuple[bytes, ...] = ()
    init_deps: tuple[str, ...] = ()
    save: tuple[bytes, ...] = ()
    restore: tuple[bytes, ...] = ()
    functions: tuple[bytes, ...] = ()
    main: tuple[bytes, ...] = ()
    restore_inputs: tuple[str, ...] = ()
    restore_op: str = "StatefulPartitionedCall_2"
    assets: tuple[str, ...] = ()
    exposed: tuple[str, ...] = field(default=(WRAPPER_FN, CALL_FN))

    def build(self) -> bytes:
        main = [
            node(
                "w", "VarHandleOp", (), {"dtype": attr(dtype=DT_FLOAT), "shared_name": attr(s="w")}
            ),
            node("w/Read/ReadVariableOp", "ReadVariableOp", ["w"]),
            node("serving_default_x", "Placeholder", (), {"dtype": attr(dtype=DT_FLOAT)}),
            call("StatefulPartitionedCall", WRAPPER_FN, ["serving_default_x", "w"]),
            *self.init,
            node("NoOp", "NoOp", [f"^{n}" for n in self.init_deps]),
            const("Const", "\n\x0e\n\x05\x08\x01\x12\x01w"),  # the checkpoint's object graph
            node("saver_filename", "Placeholder", (), {"dtype": attr(dtype=DT_STRING)}),
            call("StatefulPartitionedCall_1", SAVE_FN, ["saver_filename", "w", "Const"]),
            call(
                "StatefulPartitionedCall_2",
                RESTORE_FN,
                ["saver_filename", "w", *self.restore_inputs],
            ),
            *self.main,
        ]
        model_fn = [
            node("ReadVariableOp", "ReadVariableOp", ["w"]),
            node("MatMul", "MatMul", ["x", "ReadVariableOp:value:0"]),
            *self.serving,
            node("Identity", "Identity", ["MatMul:product:0"]),
        ]
        functions = [
            function(WRAPPER_FN, [call("StatefulPartitionedCall", CALL_FN, ["x", "w"])]),
            function(CALL_FN, model_fn, [("x", DT_FLOAT), ("w", DT_RESOURCE)]),
            _traced_save(self.save),
            _traced_restore(self.restore),
            *self.functions,
        ]
        signatures = {
            "serving_default": ("serving_default_x:0", "StatefulPartitionedCall:0"),
            "__saved_model_init_op": ("", "NoOp"),
        }
        return saved_model(
            meta_graph(
                graph(main, functions),
                saver=("saver_filename:0", "StatefulPartitionedCall_1:0", self.restore_op),
                signatures=signatures,
                exposed=self.exposed,
                assets=self.assets,
            )
        )


def tf1_model(
    extra: Iterable[bytes] = (), restore_extra: Iterable[str] = (), main_op: str = ""
) -> bytes:
    """A TF1 ``SavedModelBuilder`` layout: the saver's ``save/`` nodes in the main graph,
    the restore op depending on ``restore_extra`` too, and ``main_op`` run after it."""
    nodes = [
        node("x", "Placeholder", (), {"dtype": attr(dtype=DT_FLOAT)}),
        node("w", "VariableV2", (), {"dtype": attr(dtype=DT_FLOAT)}),
        node("w/read", "Identity", ["w"]),
        node("y", "MatMul", ["x", "w/read"]),
        const("save/filename/input", "model"),
        node("save/filename", "PlaceholderWithDefault", ["save/filename/input"]),
        node("save/Const", "PlaceholderWithDefault", ["save/filename"]),
        node("save/StringJoin", "StringJoin", ["save/Const"]),
        node("save/num_shards", "Const"),
        node("save/ShardedFilename", "ShardedFilename", ["save/StringJoin", "save/num_shards"]),
        const("save/SaveV2/tensor_names", "w"),
        node("save/SaveV2", "SaveV2", ["save/ShardedFilename", "save/SaveV2/tensor_names", "w"]),
        node("save/control_dependency", "Identity", ["save/ShardedFilename", "^save/SaveV2"]),
        node("save/Pack", "Pack", ["save/ShardedFilename", "^save/control_dependency"]),
        node("save/MergeV2Checkpoints", "MergeV2Checkpoints", ["save/Pack", "save/Const"]),
        node("save/Identity", "Identity", ["save/Const", "^save/MergeV2Checkpoints"]),
        const("save/RestoreV2/tensor_names", "w"),
        node("save/RestoreV2", "RestoreV2", ["save/Const", "save/RestoreV2/tensor_names"]),
        node("save/Assign", "Assign", ["w", "save/RestoreV2"]),
        node("save/restore_shard", "NoOp", ["^save/Assign"]),
        node("save/restore_all", "NoOp", ["^save/restore_shard", *restore_extra]),
        *extra,
    ]
    return saved_model(
        meta_graph(
            graph(nodes),
            saver=("save/Const:0", "save/Identity:0", "save/restore_all"),
            signatures={"serving_default": ("x:0", "y:0")},
            collections={"saved_model_main_op": [main_op]} if main_op else None,
        )
    )


def main_op_model(*nodes: bytes, main_op: str) -> bytes:
    """A TF1 graph whose ``saved_model_main_op`` (run at load, after the restore) is
    ``main_op``; no variables, so no saver."""
    return saved_model(
        meta_graph(
            graph(nodes),
            saver=None,
            signatures={},
            collections={"saved_model_main_op": [main_op]},
        )
    )


# --- samples -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SavedModelRecipe:
    """One sample: ``build`` turns a payload (unused by benign ones) into file bytes;
    ``runs_at_load`` if loading it with TensorFlow creates the marker."""

    name: str
    technique: str
    build: Callable[[Payload], bytes]
    runs_at_load: bool = False


def _dataset_from_graph(p: Payload) -> bytes:
    # A tf.data graph as ``Dataset._as_serialized_graph`` writes it: a TensorDataset
    # mapped by a function that writes the marker, returned by a ``_Retval``.
    write = function(
        "map_fn",
        [
            const("path", str(p.marker)),
            node("WriteFile", "WriteFile", ["path:output:0", "args_0"]),
            # Not an Identity of the argument, which tf.data would short-circuit.
            node(
                "Join",
                "StringJoin",
                ["args_0", "path:output:0", "^WriteFile"],
                {"N": integer(3, 2)},
            ),
        ],
        [("args_0", DT_STRING)],
        {"identity": "Join:output:0"},
        outputs=[("identity", DT_STRING)],
    )
    tensor_types = length(1, length(6, varint(DT_STRING)))
    hidden = graph(
        [
            const("Const/_0", "bastion"),
            node(
                "TensorDataset/_1",
                "TensorDataset",
                ["Const/_0"],
                {"Toutput_types": tensor_types, "output_shapes": length(1, length(7, b""))},
            ),
            node(
                "MapDataset/_2",
                "MapDataset",
                ["TensorDataset/_1"],
                dataset_attrs(f=func("map_fn"), Targuments=length(1, b"")),
            ),
            node(
                "dataset",
                "_Retval",
                ["MapDataset/_2"],
                {"T": attr(dtype=DT_VARIANT), "index": integer(3, 0)},  # AttrValue.i
            ),
        ],
        [write],
    )
    string, scalar = attr(dtype=DT_STRING), length(7, b"")  # AttrValue.shape: a scalar
    return main_op_model(
        node("graph_def", "Const", (), {"dtype": string, "value": strings(hidden)}),
        # Kept in a variable, so that the graph optimizer does not constant-fold the dataset.
        node(
            "v", "VarHandleOp", (), {"dtype": string, "shape": scalar, "shared_name": attr(s="v")}
        ),
        node("v/Assign", "AssignVariableOp", ["v", "graph_def"], {"dtype": string}),
        node("v/Read", "ReadVariableOp", ["v", "^v/Assign"], {"dtype": string}),
        node("DatasetFromGraph", "DatasetFromGraph", ["v/Read"]),
        node("element", "DatasetToSingleElement", ["DatasetFromGraph"], dataset_attrs()),
        node("main_op", "NoOp", ["^element"]),
        main_op="main_op",
    )


def _print_to_file(p: Payload) -> bytes:
    stream = attr(s=f"file://{p.marker}")
    return main_op_model(
        const("message", "bastion"),
        node("PrintV2", "PrintV2", ["message"], {"output_stream": stream}),
        node("main_op", "NoOp", ["^PrintV2"]),
        main_op="main_op",
    )


def _print_in_serving(p: Payload) -> bytes:
    stream = attr(s=f"file://{p.marker}")
    printer = node("PrintV2", "PrintV2", ["StringFormat:output:0"], {"output_stream": stream})
    return Model(serving=(node("StringFormat", "StringFormat", ["x"]), printer)).build()


def _savev2_in_serving(p: Payload) -> bytes:
    return Model(
        serving=(
            const("prefix", str(p.marker)),
            node("SaveV2", "SaveV2", ["prefix:output:0", "x"]),
        )
    ).build()


def _savev2_on_restore_path(p: Payload) -> bytes:
    extra = (
        const("evil/prefix", str(p.marker)),
        node("evil/SaveV2", "SaveV2", ["evil/prefix", "w"]),
    )
    return Model(main=extra, restore_inputs=("^evil/SaveV2",)).build()


def _writefile_in_traced_restore(p: Payload) -> bytes:
    return Model(
        restore=(
            const("marker", str(p.marker)),
            node("WriteFile", "WriteFile", ["marker:output:0", "file_prefix"]),
        )
    ).build()


def _glob_and_read(_p: Payload) -> bytes:
    return Model(
        serving=(
            const("pattern", "/etc/*"),
            node("MatchingFiles", "MatchingFiles", ["pattern:output:0"]),
            node("ReadFile", "ReadFile", ["MatchingFiles:filenames:0"]),
        )
    ).build()


def _eager_py_func(_p: Payload) -> bytes:
    pyfunc = node("EagerPyFunc", "EagerPyFunc", ["x"], {"token": attr(s="pyfunc_0")})
    return Model(serving=(pyfunc,)).build()


SAVEDMODEL_BENIGN = (
    SavedModelRecipe(
        "savedmodel_tf2_module.pb",
        "TF2 tf.saved_model.save layout: serving signature, init op, traced save/restore",
        lambda _p: Model().build(),
    ),
    SavedModelRecipe(
        "savedmodel_tf1_builder.pb",
        "TF1 SavedModelBuilder layout: save/SaveV2, save/MergeV2Checkpoints, save/RestoreV2",
        lambda _p: tf1_model(),
    ),
)

SAVEDMODEL_MALICIOUS = (
    SavedModelRecipe(
        "savedmodel_writefile_in_dataset_from_graph.pb",
        "D.36 WriteFile in a tf.data map function of a GraphDef that a string constant carries "
        "into DatasetFromGraph, run by a TF1 main op at load",
        _dataset_from_graph,
        runs_at_load=True,
    ),
    SavedModelRecipe(
        "savedmodel_printv2_output_stream_file.pb",
        "D.36 PrintV2 whose output_stream is a file:// URL, in a TF1 main op run at load",
        _print_to_file,
        runs_at_load=True,
    ),
    SavedModelRecipe(
        "savedmodel_printv2_in_serving_function.pb",
        "D.36 PrintV2 whose output_stream is a file:// URL, in the serving function",
        _print_in_serving,
    ),
    SavedModelRecipe(
        "savedmodel_savev2_in_serving_function.pb",
        "D.36 SaveV2 writing a checkpoint from the serving function, outside the saver",
        _savev2_in_serving,
    ),
    SavedModelRecipe(
        "savedmodel_savev2_on_restore_path.pb",
        "D.36 SaveV2 wired as a control input of the saver's restore op, which runs at load",
        _savev2_on_restore_path,
    ),
    SavedModelRecipe(
        "savedmodel_writefile_in_traced_restore.pb",
        "D.36 WriteFile inside the _traced_restore function that the C++ loader runs",
        _writefile_in_traced_restore,
    ),
    SavedModelRecipe(
        "savedmodel_matchingfiles_readfile.pb",
        "D.36 MatchingFiles('/etc/*') then ReadFile in the serving function",
        _glob_and_read,
    ),
    SavedModelRecipe(
        "savedmodel_eager_py_func.pb",
        "D.36 EagerPyFunc (tf.py_function) in the serving function",
        _eager_py_func,
    ),
)


def write_savedmodel_benign(outdir: Path) -> list[Sample]:
    samples = []
    for recipe in SAVEDMODEL_BENIGN:
        path = outdir / recipe.name
        path.write_bytes(recipe.build(Payload(outdir / "unused")))
        samples.append(Sample(recipe.name, path, recipe.technique, False, LOADER))
    return samples


def write_savedmodel_malicious(outdir: Path, markers: Path) -> list[Sample]:
    samples = []
    for recipe in SAVEDMODEL_MALICIOUS:
        path, payload = outdir / recipe.name, Payload(markers / recipe.name)
        path.write_bytes(recipe.build(payload))
        samples.append(
            Sample(recipe.name, path, recipe.technique, True, LOADER, marker=payload.marker)
        )
    return samples
