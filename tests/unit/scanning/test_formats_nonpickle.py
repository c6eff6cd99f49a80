"""safetensors, GGUF, Keras and ONNX: hostile headers, configs and graphs, built by hand."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.scanning import Limits, ScanReport, Severity, scan
from bastion.scanning._gguf import template_threats
from tests.unit.scanning.crafted import make_zip

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def scan_bytes(tmp_path: Path, data: bytes, name: str = "model.bin") -> ScanReport:
    path = tmp_path / name
    path.write_bytes(data)
    return scan(path, limits=Limits())


def rules(report: ScanReport) -> set[str]:
    return {f.rule_id for f in report.findings}


# --- safetensors -----------------------------------------------------------------------


def safetensors_bytes(header: object, data: bytes = b"", *, raw: bytes | None = None) -> bytes:
    text = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_real_safetensors_file_is_clean(tmp_path: Path) -> None:
    arrays = {"a": np.zeros((3, 4), np.float32), "b": np.arange(5, dtype=np.int64)}
    path = tmp_path / "model.safetensors"
    safetensors.numpy.save_file(arrays, str(path), metadata={"format": "np"})
    report = scan(path)
    assert report.findings == []
    assert [s.format for s in report.scanned] == ["safetensors"]


@pytest.mark.parametrize(
    ("header", "data", "rule"),
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}}, b"\0" * 8, "offsets"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            "offsets",
        ),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, "offsets"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 9, "offsets"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "offsets"),
        ({"a": {"dtype": "X99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "dtype"),
    ],
    ids=["out-of-bounds", "overlap", "gap-before", "trailing-bytes", "size-vs-shape", "dtype"],
)
def test_safetensors_layout_problems(
    tmp_path: Path, header: object, data: bytes, rule: str
) -> None:
    report = scan_bytes(tmp_path, safetensors_bytes(header, data))
    assert f"safetensors.{rule}" in rules(report)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1, "a": 2}',
        b'{"a": {"dtype": "F32"}}',
        b'{"__metadata__": {"k": 1}}',
        b'{"\xff": 1}',
        b"{not json}",
        b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}',
    ],
    ids=["duplicate-key", "missing-fields", "metadata-not-strings", "not-utf8", "not-json", "rev"],
)
def test_safetensors_invalid_headers(tmp_path: Path, raw: bytes) -> None:
    report = scan_bytes(tmp_path, safetensors_bytes(None, b"\0" * 8, raw=raw))
    assert {"safetensors.header-invalid", "scan.incomplete"} <= rules(report)
    assert report.max_severity == Severity.HIGH


def test_safetensors_header_length_past_the_end_is_not_safetensors(tmp_path: Path) -> None:
    blob = struct.pack("<Q", 1000) + b'{"a": 1}'
    assert rules(scan_bytes(tmp_path, blob)) == {"scan.unknown-format"}


# --- GGUF ------------------------------------------------------------------------------


def gguf_string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def gguf(kvs: list[tuple[str, int, bytes]], tensors: bytes = b"", n_tensors: int = 0) -> bytes:
    body = b"".join(gguf_string(k) + struct.pack("<I", t) + v for k, t, v in kvs)
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(kvs)) + body + tensors


BENIGN_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' }}{% endfor %}"
    "{% set ns = namespace(found=false) %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TOKENS = struct.pack("<IQ", 8, 3) + b"".join(gguf_string(t) for t in ("<s>", "a", "b"))


def test_benign_gguf_is_clean(tmp_path: Path) -> None:
    blob = gguf(
        [
            ("general.architecture", 8, gguf_string("llama")),
            ("general.alignment", 4, struct.pack("<I", 32)),
            ("llama.context_length", 4, struct.pack("<I", 4096)),
            ("tokenizer.ggml.tokens", 9, TOKENS),
            ("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, 3) + b"\0" * 12),
            ("tokenizer.chat_template", 8, gguf_string(BENIGN_TEMPLATE)),
        ],
        tensors=gguf_string("w") + struct.pack("<IQIQ", 1, 4, 0, 0) + b"\0" * 64,
        n_tensors=1,
    )
    report = scan_bytes(tmp_path, blob, "m.gguf")
    assert report.findings == []
    assert [s.format for s in report.scanned] == ["gguf"]


@pytest.mark.parametrize(
    "template",
    [
        # CVE-2024-34359 (llama-cpp-python), as published.
        "{% for x in ().__class__.__base__.__subclasses__() %}{% if 'warning' in x.__name__ %}"
        "{{ x()._module.__builtins__['__import__']('os').popen('id').read() }}{% endif %}"
        "{% endfor %}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ lipsum['__glo' ~ 'bals__'] }}",
        "{{ ()|attr('\\x5f\\x5fclass\\x5f\\x5f') }}",
        "{{ self._TemplateReference__context.joiner }}",
        "{{ request.application }}",
        "{{ ('%c' * 2)|format(95, 95) }}",
    ],
)
def test_gguf_chat_template_escapes_are_high(tmp_path: Path, template: str) -> None:
    blob = gguf([("tokenizer.chat_template.tool_use", 8, gguf_string(template))])
    report = scan_bytes(tmp_path, blob, "m.gguf")
    [finding] = report.findings
    assert (finding.rule_id, finding.severity) == ("gguf.chat-template", Severity.HIGH)
    assert finding.config_path == "tokenizer.chat_template.tool_use"


def test_benign_templates_have_no_threats() -> None:
    assert template_threats(BENIGN_TEMPLATE) == []
    assert template_threats("{{ raise_exception('x') }}{{ bos_token }}{{ messages|length }}") == []


@pytest.mark.parametrize(
    "blob",
    [
        b"GGUF" + struct.pack("<IQQ", 1, 0, 0),
        b"GGUF" + struct.pack("<IQQ", 3, 0, 2**40),
        gguf([("k", 8, struct.pack("<Q", 2**40))]),
        gguf([("k", 77, b"")]),
        gguf([("k", 9, struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 9, 1) + b"\0" * 12)]),
        gguf([("general.alignment", 4, struct.pack("<I", 3))]),
        gguf([], tensors=gguf_string("w") + struct.pack("<IQIQ", 1, 4, 0, 10**6), n_tensors=1),
    ],
    ids=["version", "kv-count", "string-length", "type", "nested-arrays", "alignment", "offset"],
)
def test_malformed_gguf_is_reported(tmp_path: Path, blob: bytes) -> None:
    report = scan_bytes(tmp_path, blob, "m.gguf")
    assert {"gguf.header-invalid", "scan.incomplete"} <= rules(report)


# --- Keras -----------------------------------------------------------------------------


def layer(cls: str, config: object, module: str = "keras.layers") -> dict[str, object]:
    return {"module": module, "class_name": cls, "config": config, "registered_name": None}


def keras_zip(config: object) -> bytes:
    return make_zip(
        {
            "metadata.json": b'{"keras_version": "3.8.0"}',
            "config.json": json.dumps(config).encode(),
            "model.weights.h5": b"\x89HDF\r\n\x1a\n" + b"\0" * 32,
        }
    )


DENSE = layer("Dense", {"units": 2, "activation": "relu"})
LAMBDA = layer("Lambda", {"function": {"class_name": "__lambda__", "config": {"code": "4wA="}}})


def functional(*layers: object) -> dict[str, object]:
    return layer("Functional", {"layers": list(layers)}, module="keras.src.models.functional")


def test_benign_keras_is_clean(tmp_path: Path) -> None:
    inner = layer("Sequential", {"layers": [DENSE]}, module="keras")
    report = scan_bytes(tmp_path, keras_zip(functional(DENSE, inner)), "m.keras")
    assert report.findings == []
    assert ("config.json", "keras") in {(s.member, s.format) for s in report.scanned}


def test_lambda_nested_in_a_sub_model_is_found(tmp_path: Path) -> None:
    inner = layer("Sequential", {"layers": [LAMBDA]}, module="keras")
    report = scan_bytes(tmp_path, keras_zip(functional(DENSE, DENSE, inner)), "m.keras")
    paths = {f.config_path for f in report.findings if f.rule_id == "keras.lambda"}
    assert "config.layers[2].config.layers[0]" in paths
    assert {f.severity for f in report.findings} == {Severity.HIGH}
    assert {f.member for f in report.findings} == {"config.json"}


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        (layer("Dense", {"units": 1}, module="subprocess"), "subprocess"),  # CVE-2025-1550
        ({**DENSE, "registered_name": "evil_pkg>Payload"}, "evil_pkg>Payload"),
        (layer("TFSMLayer", {"filepath": "/tmp/sm"}), "CVE-2026-1462"),
        (
            layer("Dense", {"activation": layer("function", "get_file", "keras.utils")}),
            "get_file",
        ),
    ],
    ids=["module", "registered-name", "tfsmlayer", "get-file"],
)
def test_foreign_modules_are_found(tmp_path: Path, obj: object, needle: str) -> None:
    report = scan_bytes(tmp_path, keras_zip(functional(DENSE, obj)), "m.keras")
    found = [f for f in report.findings if f.rule_id == "keras.foreign-module"]
    assert found
    assert needle in found[0].message
    assert found[0].config_path is not None
    assert found[0].config_path.startswith("config.layers[1]")


def test_keras_config_that_is_not_json_is_incomplete(tmp_path: Path) -> None:
    blob = make_zip({"config.json": b"{nope", "metadata.json": b"{}"})
    assert rules(scan_bytes(tmp_path, blob, "m.keras")) == {"scan.incomplete"}


# --- ONNX ------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    raw = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | 2) + varint(len(raw)) + raw


def onnx_model(*graph: bytes, opsets: tuple[str, ...] = ("",), extra: bytes = b"") -> bytes:
    opset = b"".join(pb(8, pb(1, d) + pb(2, 17)) for d in opsets)
    return pb(1, 9) + pb(2, "pytorch") + pb(7, b"".join(graph)) + opset + extra


def node(op: str, domain: str = "", *attrs: bytes) -> bytes:
    return pb(1, pb(1, "x") + pb(2, "y") + pb(4, op) + pb(7, domain) + b"".join(attrs))


def external(location: str) -> bytes:
    entry = pb(13, pb(1, "location") + pb(2, location)) + pb(13, pb(1, "offset") + pb(2, "0"))
    return pb(5, pb(1, 4) + pb(2, 1) + pb(8, "w") + entry + pb(14, 1))


def test_benign_onnx_is_clean(tmp_path: Path) -> None:
    inline = pb(5, pb(1, 2) + pb(2, 1) + pb(8, "b") + pb(9, b"\0" * 8))
    report = scan_bytes(tmp_path, onnx_model(node("Relu"), inline), "m.onnx")
    assert report.findings == []
    assert [s.format for s in report.scanned] == ["onnx"]


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "C:\\x", "a/../../b"])
def test_onnx_external_data_outside_the_folder_is_high(tmp_path: Path, location: str) -> None:
    report = scan_bytes(tmp_path, onnx_model(node("Relu"), external(location)), "m.onnx")
    [finding] = report.findings
    assert (finding.rule_id, finding.severity) == ("onnx.external-data", Severity.HIGH)


def test_onnx_external_data_in_the_folder_is_info(tmp_path: Path) -> None:
    (tmp_path / "m.onnx.data").write_bytes(b"\0" * 16)
    report = scan_bytes(tmp_path, onnx_model(node("Relu"), external("m.onnx.data")), "m.onnx")
    assert [(f.rule_id, f.severity) for f in report.findings] == [
        ("onnx.external-data", Severity.INFO)
    ]


def test_onnx_external_data_in_a_nested_graph_is_found(tmp_path: Path) -> None:
    branch = pb(5, pb(1, "then_branch") + pb(6, node("Relu") + external("/etc/shadow")))
    report = scan_bytes(tmp_path, onnx_model(node("If", "", branch)), "m.onnx")
    assert [f.severity for f in report.findings] == [Severity.HIGH]


def test_onnx_custom_domains(tmp_path: Path) -> None:
    model = onnx_model(
        node("Relu"),
        node("Evil", "com.attacker"),
        node("FusedGemm", "com.microsoft"),
        node("Helper", "local.fn"),
        opsets=("", "com.attacker", "com.microsoft", "local.fn"),
        extra=pb(25, pb(1, "Helper") + pb(10, "local.fn") + pb(7, pb(4, "Relu"))),
    )
    report = scan_bytes(tmp_path, model, "m.onnx")
    found = sorted((f.severity, f.message.split("'")[1]) for f in report.findings)
    assert found == [(Severity.LOW, "com.microsoft"), (Severity.MEDIUM, "com.attacker")]
    assert {f.rule_id for f in report.findings} == {"onnx.custom-domain"}


def test_truncated_onnx_is_incomplete(tmp_path: Path) -> None:
    blob = onnx_model(node("Relu"), external("../x"))
    report = scan_bytes(tmp_path, blob[:-3], "m.onnx")
    assert "scan.incomplete" in rules(report)


# --- no input escapes as an exception ---------------------------------------------------

SEEDS = {
    "safetensors": safetensors_bytes(
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8
    ),
    "gguf": gguf([("tokenizer.chat_template", 8, gguf_string("{{ x }}")), ("t", 9, TOKENS)]),
    "onnx": onnx_model(node("If", "d", pb(5, pb(6, node("A") + external("w")))), external("../w")),
    "keras": keras_zip(functional(DENSE, LAMBDA)),
}


@SETTINGS
@given(
    seed=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10**6),
)
def test_mutated_files_give_findings_not_exceptions(
    tmp_path: Path, seed: str, edits: list[tuple[int, int]], cut: int
) -> None:
    blob = bytearray(SEEDS[seed])
    for at, byte in edits:
        blob[at % len(blob)] = byte
    report = scan_bytes(tmp_path, bytes(blob[: max(1, cut % (len(blob) + 1))]), "m.bin")
    assert escaped(report) == []


@SETTINGS
@given(prefix=st.sampled_from([b"GGUF", b"\x08\x07\x12", struct.pack("<Q", 2)]), rest=st.binary())
def test_random_bytes_after_a_magic_never_raise(tmp_path: Path, prefix: bytes, rest: bytes) -> None:
    assert escaped(scan_bytes(tmp_path, prefix + rest)) == []


def escaped(report: ScanReport) -> list[str]:
    """Findings made from an exception that escaped a parser (see ``describe_error``)."""
    return [f.message for f in report.findings if f.message.startswith("could not be parsed (")]


# --- Keras HDF5 ---------------------------------------------------------------------------


def test_an_unreadable_hdf5_file_is_a_finding_not_clean(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, b"\x89HDF\r\n\x1a\n" + b"\0" * 64, "m.h5")
    assert {(f.rule_id, f.format) for f in report.findings} == {("scan.incomplete", "hdf5")}
