"""TensorFlow SavedModels: op families, the saver rule, nested graphs and the sidecar files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.scanning import ScanReport, scan
from bastion.scanning import _savedmodel as savedmodel_module
from bastion.scanning._detect import detect
from tests.scanning_corpus._sample import Payload
from tests.scanning_corpus._savedmodel_samples import (
    CALL_FN,
    RESTORE_FN,
    SAVE_FN,
    SAVEDMODEL_BENIGN,
    SAVEDMODEL_MALICIOUS,
    Model,
    SavedModelRecipe,
    attr,
    call,
    const,
    func,
    func_list,
    function,
    graph,
    integer,
    length,
    list_s,
    meta_graph,
    node,
    saved_model,
    strings,
    tf1_model,
)

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
MG = "meta_graphs[0].graph_def"
SERVING = f"{MG}.library.function[{CALL_FN!r}].node_def"


def scan_bytes(tmp_path: Path, data: bytes, name: str = "saved_model.pb") -> ScanReport:
    path = tmp_path / name
    path.write_bytes(data)
    return scan(path)


def found(report: ScanReport) -> set[tuple[str, str, str | None]]:
    return {(f.rule_id, f.severity.label, f.config_path) for f in report.findings}


def build(recipe: SavedModelRecipe, tmp_path: Path) -> bytes:
    return recipe.build(Payload(tmp_path / "markers" / recipe.name))


def bare(*nodes: bytes) -> bytes:
    """A SavedModel of one main graph holding ``nodes``: no saver, no signature."""
    return saved_model(meta_graph(graph(nodes), saver=None, signatures={}))


# --- real layouts -------------------------------------------------------------------------


@pytest.mark.parametrize("recipe", SAVEDMODEL_BENIGN, ids=lambda r: r.name)
def test_the_saver_of_a_normal_model_is_not_flagged(
    tmp_path: Path, recipe: SavedModelRecipe
) -> None:
    report = scan_bytes(tmp_path, build(recipe, tmp_path))
    assert report.findings == []
    assert [s.format for s in report.scanned] == ["savedmodel"]


DATASET = f"{MG}.node['graph_def'].attr['value'].tensor.string_val.library.function['map_fn']"
EXPECTED = {
    "savedmodel_writefile_in_dataset_from_graph.pb": {
        ("savedmodel.file-write", "high", f"{DATASET}.node_def['WriteFile']"),
        ("savedmodel.dynamic-graph", "medium", f"{MG}.node['DatasetFromGraph']"),
    },
    "savedmodel_printv2_output_stream_file.pb": {
        ("savedmodel.file-write", "high", f"{MG}.node['PrintV2']")
    },
    "savedmodel_printv2_in_serving_function.pb": {
        ("savedmodel.file-write", "high", f"{SERVING}['PrintV2']")
    },
    "savedmodel_savev2_in_serving_function.pb": {
        ("savedmodel.file-write", "high", f"{SERVING}['SaveV2']")
    },
    "savedmodel_savev2_on_restore_path.pb": {
        ("savedmodel.file-write", "high", f"{MG}.node['evil/SaveV2']")
    },
    "savedmodel_writefile_in_traced_restore.pb": {
        (
            "savedmodel.file-write",
            "high",
            f"{MG}.library.function[{RESTORE_FN!r}].node_def['WriteFile']",
        )
    },
    "savedmodel_matchingfiles_readfile.pb": {
        ("savedmodel.file-read", "high", f"{SERVING}['MatchingFiles']"),
        ("savedmodel.file-read", "high", f"{SERVING}['ReadFile']"),
    },
    "savedmodel_eager_py_func.pb": {
        ("savedmodel.code-execution", "high", f"{SERVING}['EagerPyFunc']")
    },
}


def test_every_malicious_sample_has_expectations() -> None:
    assert {r.name for r in SAVEDMODEL_MALICIOUS} == set(EXPECTED)


@pytest.mark.parametrize("recipe", SAVEDMODEL_MALICIOUS, ids=lambda r: r.name)
def test_malicious_samples_are_reported_at_their_node(
    tmp_path: Path, recipe: SavedModelRecipe
) -> None:
    report = scan_bytes(tmp_path, build(recipe, tmp_path))
    assert found(report) == EXPECTED[recipe.name]
    assert [s.format for s in report.scanned] == ["savedmodel"]


# --- the saver rule -----------------------------------------------------------------------

SAVE = f"{MG}.library.function[{SAVE_FN!r}].node_def"
RESTORE = f"{MG}.library.function[{RESTORE_FN!r}].node_def"


def test_saver_function_also_called_from_serving_is_flagged(tmp_path: Path) -> None:
    model = Model(serving=(call("Saves", SAVE_FN, ["x"]),))
    report = scan_bytes(tmp_path, model.build())
    assert found(report) == {
        ("savedmodel.file-write", "high", f"{SAVE}['SaveV2']"),
        ("savedmodel.file-write", "high", f"{SAVE}['MergeV2Checkpoints']"),
    }
    assert all("outside the model's saver" in f.message for f in report.findings)


def test_saver_function_exposed_by_the_object_graph_is_flagged(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, Model(exposed=(RESTORE_FN,)).build())
    assert found(report) == {("savedmodel.file-read", "high", f"{RESTORE}['RestoreV2']")}


def test_checkpoint_op_in_a_function_nothing_calls_is_flagged(tmp_path: Path) -> None:
    orphan = function("orphan", [node("SaveV2", "SaveV2")])
    report = scan_bytes(tmp_path, Model(functions=(orphan,)).build())
    assert found(report) == {
        ("savedmodel.file-write", "high", f"{MG}.library.function['orphan'].node_def['SaveV2']")
    }


def test_checkpoint_ops_on_the_wrong_side_of_the_saver_are_flagged(tmp_path: Path) -> None:
    model = Model(save=(node("Reads", "RestoreV2"),), restore=(node("Writes", "SaveV2"),))
    assert found(scan_bytes(tmp_path, model.build())) == {
        ("savedmodel.file-read", "high", f"{SAVE}['Reads']"),
        ("savedmodel.file-write", "high", f"{RESTORE}['Writes']"),
    }


def test_other_file_ops_are_flagged_even_inside_the_saver(tmp_path: Path) -> None:
    model = Model(save=(node("WriteFile", "WriteFile", ["file_prefix", "file_prefix"]),))
    assert found(scan_bytes(tmp_path, model.build())) == {
        ("savedmodel.file-write", "high", f"{SAVE}['WriteFile']")
    }


def test_checkpoint_ops_in_a_graph_nested_in_the_saver_are_flagged(tmp_path: Path) -> None:
    hidden = graph([node("Saves", "SaveV2")])
    carrier = node("Carrier", "Const", (), {"value": strings(hidden)})
    report = scan_bytes(tmp_path, Model(save=(carrier,)).build())
    path = f"{SAVE}['Carrier'].attr['value'].tensor.string_val.node['Saves']"
    assert found(report) == {("savedmodel.file-write", "high", path)}


def test_checkpoint_ops_a_signature_reaches_are_flagged_without_a_saver(tmp_path: Path) -> None:
    nodes = graph([node("x", "Placeholder"), node("save/SaveV2", "SaveV2", ["x"])])
    data = saved_model(meta_graph(nodes, saver=None, signatures={"s": ("x:0", "save/SaveV2")}))
    report = scan_bytes(tmp_path, data)
    assert found(report) == {("savedmodel.file-write", "high", f"{MG}.node['save/SaveV2']")}


def test_checkpoint_ops_that_no_loader_runs_are_not_flagged(tmp_path: Path) -> None:
    # A TF1 graph exported twice keeps the first saver's nodes: nothing refers to them.
    stale = [node("save_1/SaveV2", "SaveV2", ["w"]), node("save_1/RestoreV2", "RestoreV2")]
    assert scan_bytes(tmp_path, tf1_model(extra=stale)).findings == []
    assert scan_bytes(tmp_path, bare(*stale)).findings == []
    # Functions are never taken as dead: one that nothing calls is flagged.
    orphan = Model(functions=(function("orphan", [node("r", "RestoreV2")]),))
    assert {f.rule_id for f in scan_bytes(tmp_path, orphan.build()).findings} == {
        "savedmodel.file-read"
    }


def test_tf1_checkpoint_ops_that_loading_or_serving_runs_are_flagged(tmp_path: Path) -> None:
    main_op = tf1_model(extra=[node("extra", "SaveV2")], main_op="extra")
    assert found(scan_bytes(tmp_path, main_op)) == {
        ("savedmodel.file-write", "high", f"{MG}.node['extra']")
    }
    on_restore = tf1_model(extra=[node("extra", "MergeV2Checkpoints")], restore_extra=["^extra"])
    assert found(scan_bytes(tmp_path, on_restore)) == {
        ("savedmodel.file-write", "high", f"{MG}.node['extra']")
    }
    # The serving signature reads y, which here depends on the saver's RestoreV2.
    served = tf1_model(extra=[node("y", "Identity", ["save/RestoreV2"])])
    assert found(scan_bytes(tmp_path, served)) == {
        ("savedmodel.file-read", "high", f"{MG}.node['save/RestoreV2']")
    }


def test_saver_def_naming_the_serving_node_vouches_for_nothing(tmp_path: Path) -> None:
    model = Model(
        serving=(node("Reads", "RestoreV2", ["x"]),), restore_op="StatefulPartitionedCall"
    )
    assert found(scan_bytes(tmp_path, model.build())) == {
        ("savedmodel.file-read", "high", f"{SERVING}['Reads']")
    }


# --- op families --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "attrs", "rule", "severity"),
    [
        ("PyFunc", {}, "savedmodel.code-execution", "high"),
        ("PyFuncStateless", {}, "savedmodel.code-execution", "high"),
        ("WriteFile", {}, "savedmodel.file-write", "high"),
        ("DatasetToTFRecord", {}, "savedmodel.file-write", "high"),
        ("CreateSummaryFileWriter", {}, "savedmodel.file-write", "high"),
        ("ReadFile", {}, "savedmodel.file-read", "high"),
        ("ImmutableConst", {}, "savedmodel.file-read", "high"),
        ("TFRecordDataset", {}, "savedmodel.file-read", "high"),
        ("RestoreV2", {}, "savedmodel.file-read", "high"),
        ("DataServiceDatasetV4", {}, "savedmodel.network", "high"),
        ("RpcClient", {}, "savedmodel.network", "high"),
        ("Abort", {}, "savedmodel.process", "medium"),
        ("DatasetFromGraph", {}, "savedmodel.dynamic-graph", "medium"),
        ("PrintV2", {"output_stream": attr(s="file:///tmp/x")}, "savedmodel.file-write", "high"),
        ("PrintV2", {"output_stream": attr(placeholder="s")}, "savedmodel.file-write", "high"),
        ("DebugIdentity", {"debug_urls": list_s("grpc://h:1")}, "savedmodel.network", "high"),
        ("DebugIdentityV2", {"debug_urls": list_s("file:///d")}, "savedmodel.file-write", "high"),
        ("DecodeProtoV2", {"descriptor_source": attr(s="/x")}, "savedmodel.file-read", "high"),
    ],
)
def test_op_families(
    tmp_path: Path, op: str, attrs: dict[str, bytes], rule: str, severity: str
) -> None:
    report = scan_bytes(tmp_path, Model(serving=(node("n", op, ["x"], attrs),)).build())
    assert found(report) == {(rule, severity, f"{SERVING}['n']")}
    assert repr(op) in report.findings[0].message


@pytest.mark.parametrize(
    ("op", "attrs"),
    [
        ("PrintV2", {}),
        ("PrintV2", {"output_stream": attr(s="log(warning)")}),
        ("Print", {}),
        ("DebugIdentity", {}),
        ("DebugNumericSummaryV2", {}),
        ("DecodeProtoV2", {"descriptor_source": attr(s="local://")}),
        ("DecodeProtoV2", {"descriptor_source": attr(s="bytes://\n\x00")}),
        ("StringJoin", {}),
    ],
)
def test_ops_that_stay_inside_are_not_flagged(
    tmp_path: Path, op: str, attrs: dict[str, bytes]
) -> None:
    assert (
        scan_bytes(tmp_path, Model(serving=(node("n", op, ["x"], attrs),)).build()).findings == []
    )


def test_table_from_a_text_file_depends_on_declared_assets(tmp_path: Path) -> None:
    table = node("init", "InitializeTableFromTextFileV2", ["table", "asset_path_initializer"])
    path = f"{MG}.node['init']"
    with_assets = Model(init=(table,), init_deps=("init",), assets=("vocab.txt",))
    assert found(scan_bytes(tmp_path, with_assets.build())) == {
        ("savedmodel.file-read", "info", path)
    }
    without = Model(init=(table,), init_deps=("init",))
    assert found(scan_bytes(tmp_path, without.build())) == {("savedmodel.file-read", "high", path)}


# --- custom ops and calls -----------------------------------------------------------------


def test_custom_op_is_medium_and_names_the_kernel_library(tmp_path: Path) -> None:
    model = Model(serving=(node("a", "SentencepieceOp"), node("b", "SentencepieceOp")))
    report = scan_bytes(tmp_path, model.build())
    assert found(report) == {("savedmodel.custom-op", "medium", f"{SERVING}['a']")}
    (finding,) = report.findings
    assert "custom kernel library" in finding.message
    assert "2 node(s)" in finding.message


def test_calls_to_the_models_own_functions_are_not_custom_ops(tmp_path: Path) -> None:
    helper = function("helper", [node("MatMul", "MatMul")])
    calls = (
        node("direct", "helper"),
        node("loop", "While", (), {"body": func("helper"), "cond": func("helper")}),
        node("case", "Case", (), {"branches": func_list("helper", "helper")}),
    )
    assert scan_bytes(tmp_path, Model(serving=calls, functions=(helper,)).build()).findings == []


def test_function_attr_naming_no_function_is_a_custom_op(tmp_path: Path) -> None:
    model = Model(serving=(node("loop", "While", (), {"body": func("missing_fn")}),))
    assert found(scan_bytes(tmp_path, model.build())) == {
        ("savedmodel.custom-op", "medium", f"{SERVING}['loop'].attr['body'].func")
    }


def test_function_attr_naming_a_dangerous_op_is_flagged(tmp_path: Path) -> None:
    model = Model(serving=(node("map", "MapDataset", (), {"f": func("WriteFile")}),))
    assert found(scan_bytes(tmp_path, model.build())) == {
        ("savedmodel.file-write", "high", f"{SERVING}['map'].attr['f'].func")
    }


# --- nesting ------------------------------------------------------------------------------


def test_graph_in_a_string_attribute_is_walked(tmp_path: Path) -> None:
    inner = graph([node("w", "WriteFile")])
    report = scan_bytes(tmp_path, bare(node("n", "Identity", (), {"g": attr(s=inner)})))
    assert found(report) == {
        ("savedmodel.file-write", "high", f"{MG}.node['n'].attr['g'].s.node['w']")
    }


def test_graph_in_a_graph_and_its_library_are_walked(tmp_path: Path) -> None:
    innermost = graph([node("p", "PyFunc")], [function("f", [node("s", "SaveV2")])])
    middle = graph([node("c", "Const", (), {"value": strings(innermost)})])
    report = scan_bytes(tmp_path, bare(node("n", "Const", (), {"value": strings(middle)})))
    prefix = f"{MG}.node['n'].attr['value'].tensor.string_val.node['c'].attr['value']"
    assert found(report) == {
        ("savedmodel.code-execution", "high", f"{prefix}.tensor.string_val.node['p']"),
        (
            "savedmodel.file-write",
            "high",
            f"{prefix}.tensor.string_val.library.function['f'].node_def['s']",
        ),
    }


def test_attributes_of_function_attributes_are_walked(tmp_path: Path) -> None:
    inner = func("outer_fn", {"nested": func("PyFunc")})
    report = scan_bytes(
        tmp_path, Model(serving=(node("n", "PartitionedCall", (), {"f": inner}),)).build()
    )
    path = f"{SERVING}['n'].attr['f'].func.attr['nested'].func"
    assert ("savedmodel.code-execution", "high", path) in found(report)


def test_strings_that_are_not_graphs_are_left_alone(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, bare(const("a", "\n\x05hello"), const("b", "\n\x02\x12\x00")))
    assert report.findings == []


def test_nesting_past_the_limit_is_a_limit_finding(tmp_path: Path) -> None:
    blob = graph([node("w", "WriteFile")])
    for _ in range(40):
        blob = graph([node("c", "Const", (), {"value": strings(blob)})])
    report = scan_bytes(tmp_path, saved_model(meta_graph(blob, saver=None, signatures={})))
    assert ("scan.limit", "medium", None) in found(report)
    value = func("f")
    for _ in range(40):
        value = func("f", {"a": value})
    deep_attrs = scan_bytes(tmp_path, bare(node("n", "While", (), {"body": value})))
    assert "scan.limit" in {f.rule_id for f in deep_attrs.findings}


def test_too_many_items_is_a_limit_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(savedmodel_module, "_MAX_ITEMS", 50)
    report = scan_bytes(tmp_path, Model(serving=(node("n", "PyFunc"),)).build())
    assert "scan.limit" in {f.rule_id for f in report.findings}
    assert report.scanned == []


def test_findings_are_capped_and_the_last_counts_the_rest(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, bare(*(node(f"w{i}", "WriteFile") for i in range(130))))
    assert len(report.findings) == 100
    assert report.findings[-1].message.endswith("(and 30 more findings in this file)")


# --- detection ----------------------------------------------------------------------------


def fingerprint() -> bytes:
    hashes = b"".join(integer(n, 0xF1D2_C3B4_A596_8778 + n) for n in range(1, 6))
    return hashes + length(6, integer(1, 2)) + length(7, "1689248203528731810578")


def keras_metadata(*configs: dict[str, object]) -> bytes:
    nodes = [
        length(3, "root" if i == 0 else f"root.layer-{i}")
        + length(4, "_tf_keras_sequential" if i == 0 else "_tf_keras_layer")
        + length(5, json.dumps(config))
        for i, config in enumerate(configs)
    ]
    return b"".join(length(1, (integer(2, i) if i else b"") + n) for i, n in enumerate(nodes))


DENSE = {"class_name": "Dense", "config": {"name": "dense", "units": 2}}
LAMBDA = {"class_name": "Lambda", "config": {"name": "l", "function": ["4wEAAAAA", None, None]}}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (Model().build(), "savedmodel"),
        (Model().build()[2:], "savedmodel"),  # no schema version
        (b"\x08\x07\x12\x07pytorch\x1a\x031.0:\x00", "onnx"),
        (fingerprint(), "tf-fingerprint"),
        (fingerprint()[:-1], "unknown"),
        (
            keras_metadata({"class_name": "Sequential", "config": {"layers": [DENSE]}}),
            "keras-metadata",
        ),
        (
            b"# written by hand\nsaved_model_schema_version: 1\nmeta_graphs {\n}\n",
            "savedmodel-text",
        ),
        (b"meta_graphs <\n  graph_def < >\n>\n", "savedmodel-text"),
        (b"meta graphs are described below\n", "text"),
    ],
)
def test_tensorflow_files_are_detected_by_content(data: bytes, expected: str) -> None:
    assert detect(data[: 64 << 10], len(data)) == expected


def test_unknown_fields_that_tensorflow_skips_do_not_hide_a_saved_model(tmp_path: Path) -> None:
    graph_def = length(2, graph([node("w", "WriteFile")]))
    padded = [
        integer(1, 1) + length(2, length(9, "x" * 70_000) + graph_def),  # pad in the meta graph
        length(9, "pad") + integer(1, 1) + length(2, length(15, "x") + graph_def),
        length(2, integer(12, 7) + graph_def),
    ]
    for data in padded:
        assert detect(data[: 64 << 10], len(data)) == "savedmodel"
        assert found(scan_bytes(tmp_path, data)) == {
            ("savedmodel.file-write", "high", f"{MG}.node['w']")
        }


def test_a_protobuf_with_no_graph_is_not_passed_as_a_saved_model(tmp_path: Path) -> None:
    data = length(2, integer(1, 1))
    assert detect(data, len(data)) == "savedmodel"
    report = scan_bytes(tmp_path, data)
    assert found(report) == {("scan.incomplete", "medium", None)}
    assert report.scanned == []


def test_an_all_ascii_saved_model_is_not_taken_for_text(tmp_path: Path) -> None:
    main_graph = length(1, node("w", "WriteFile", ["a", "b"]))
    data = integer(1, 1) + length(2, length(2, main_graph))
    assert data.isascii()
    assert b"\x00" not in data
    assert found(scan_bytes(tmp_path, data, "notes.txt")) == {
        ("savedmodel.file-write", "high", f"{MG}.node['w']")
    }


def test_text_saved_model_is_unsupported_not_clean(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, b"saved_model_schema_version: 1\n", "saved_model.pbtxt")
    assert found(report) == {("scan.unsupported-format", "medium", None)}


def test_fingerprint_is_scanned_and_clean(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, fingerprint(), "fingerprint.pb")
    assert report.findings == []
    assert [s.format for s in report.scanned] == ["tf-fingerprint"]


def test_keras_metadata_is_audited_like_a_keras_config(tmp_path: Path) -> None:
    model = {"class_name": "Sequential", "config": {"layers": [DENSE, LAMBDA]}}
    report = scan_bytes(tmp_path, keras_metadata(model, DENSE, LAMBDA), "keras_metadata.pb")
    assert found(report) == {
        ("keras.lambda", "high", "nodes[0](root).metadata.config.layers[1]"),
        ("keras.lambda", "high", "nodes[2](root.layer-2).metadata"),
    }
    clean = scan_bytes(tmp_path, keras_metadata(DENSE), "keras_metadata.pb")
    assert clean.findings == []
    assert [s.format for s in clean.scanned] == ["keras-metadata"]


def test_keras_metadata_that_is_not_json_is_incomplete(tmp_path: Path) -> None:
    data = length(1, length(3, "root") + length(4, "_tf_keras_layer") + length(5, "{not json"))
    assert found(scan_bytes(tmp_path, data)) == {("scan.incomplete", "medium", None)}


# --- failing closed -----------------------------------------------------------------------


def test_truncated_saved_model_is_incomplete(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, Model(serving=(node("n", "PyFunc"),)).build()[:-7])
    assert ("scan.incomplete", "medium", None) in found(report)
    assert report.scanned == []


def test_damage_after_a_meta_graph_keeps_its_findings(tmp_path: Path) -> None:
    data = Model(serving=(node("n", "PyFunc"),)).build() + b"\x12\x7f"
    assert found(scan_bytes(tmp_path, data)) == {
        ("scan.incomplete", "medium", None),
        ("savedmodel.code-execution", "high", f"{SERVING}['n']"),
    }


SEEDS = [build(r, Path("/nonexistent")) for r in (*SAVEDMODEL_BENIGN, *SAVEDMODEL_MALICIOUS)]


def escaped(report: ScanReport) -> list[str]:
    """Findings made from an exception that escaped the reader (see ``describe_error``)."""
    return [f.message for f in report.findings if f.message.startswith("could not be parsed (")]


@SETTINGS
@given(
    seed=st.sampled_from(range(len(SEEDS))),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10**6),
)
def test_mutated_saved_models_give_reports_not_exceptions(
    tmp_path: Path, seed: int, edits: list[tuple[int, int]], cut: int
) -> None:
    blob = bytearray(SEEDS[seed])
    for at, byte in edits:
        blob[at % len(blob)] = byte
    report = scan_bytes(tmp_path, bytes(blob[: max(1, cut % (len(blob) + 1))]))
    assert escaped(report) == []


def _message(children: list[tuple[int, bytes]]) -> bytes:
    return b"".join(length(number, child) for number, child in children)


MESSAGES = st.recursive(
    st.binary(max_size=12) | st.sampled_from([b"PyFunc", b"WriteFile", b"SaveV2", b"\n\x04"]),
    lambda inner: st.lists(st.tuples(st.integers(1, 10), inner), max_size=5).map(_message),
    max_leaves=40,
)


@SETTINGS
@given(body=MESSAGES)
def test_random_nested_messages_in_a_meta_graph_never_raise(tmp_path: Path, body: bytes) -> None:
    data = integer(1, 1) + length(2, length(2, body) + length(7, body))
    assert escaped(scan_bytes(tmp_path, data)) == []
