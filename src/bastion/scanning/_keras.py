"""Keras model configurations: the ``config.json`` of a ``.keras`` archive.

A Keras config names, for every layer and object, a class and the module it
comes from; loading imports that module and builds the object. So a config can
run code without any pickle: a ``Lambda`` layer carries marshalled bytecode
(CVE-2024-3660), and in Keras < 3.9 any module and function named in the config
is imported and called even with ``safe_mode=True`` (CVE-2025-1550). The config
is parsed as JSON (never deserialised by Keras) and every object in it, at any
depth, is audited; findings carry the object's ``config_path``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import BinaryIO

from bastion.scanning._context import ScanContext
from bastion.scanning._report import Finding, Severity

__all__ = ["MAX_CONFIG", "audit_config", "scan_keras_config"]

#: The largest config read into memory.
MAX_CONFIG = 64 << 20

#: Packages whose modules Keras itself writes into configs.
_KERAS_PACKAGES = ("keras", "tf_keras", "keras_hub", "keras_nlp", "keras_cv", "keras_rs")

#: Layers that load and run other artefacts (CVE-2026-1462: TFSMLayer runs a SavedModel).
_LOADERS = {"TFSMLayer": "loads and runs a TensorFlow SavedModel (CVE-2026-1462)"}

#: Keras functions that reach the file system or network (CVE-2025-8747).
_GADGETS = frozenset(
    {"get_file", "load_model", "save_model", "load_weights", "save_weights", "load_img"}
)

_LAMBDAS = frozenset({"Lambda", "__lambda__"})

#: Findings shown per config; the last one counts the rest.
_SHOWN = 100


def scan_keras_config(ctx: ScanContext, stream: BinaryIO, member: str | None) -> None:
    """Audit a ``.keras`` archive's ``config.json`` (``stream``)."""
    raw = stream.read(MAX_CONFIG + 1)
    if len(raw) > MAX_CONFIG:
        ctx.limit(f"Keras config larger than {MAX_CONFIG} bytes", format="keras", member=member)
        return
    try:
        config = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        ctx.incomplete("Keras config is not valid JSON; not scanned", format="keras", member=member)
        return
    ctx.mark_scanned("keras", member)
    report(ctx, "keras", member, audit_config(config))


def report(
    ctx: ScanContext,
    fmt: str,
    member: str | None,
    findings: list[tuple[str, Severity, str, str]],
) -> None:
    """Add ``(rule, severity, message, config_path)`` findings, at most ``_SHOWN`` of them."""
    for i, (rule, severity, message, path) in enumerate(findings[:_SHOWN]):
        if i == _SHOWN - 1 and len(findings) > _SHOWN:
            message += f" (and {len(findings) - _SHOWN} more findings in this config)"
        ctx.findings.append(
            Finding(
                rule_id=rule,
                severity=severity,
                message=message,
                path=ctx.path,
                format=fmt,
                member=member,
                config_path=path or "<root>",
            )
        )


def audit_config(config: object) -> list[tuple[str, Severity, str, str]]:
    """Every object in a Keras config that runs code on load, with its config path."""
    found: list[tuple[str, Severity, str, str]] = []
    for obj, path in _objects(config):
        cls = obj.get("class_name")
        cls = cls if isinstance(cls, str) else ""
        if cls in _LAMBDAS:
            found.append(
                (
                    "keras.lambda",
                    Severity.HIGH,
                    f"{cls} object: Keras runs its marshalled bytecode or source when the "
                    "model is loaded with safe_mode off (CVE-2024-3660)",
                    path,
                )
            )
        reasons = list(_foreign(obj, cls))
        if reasons:
            found.append(
                (
                    "keras.foreign-module",
                    Severity.HIGH,
                    f"{cls[:100]!r} object {'; '.join(reasons)}",
                    path,
                )
            )
    return found


def _foreign(obj: dict[str, object], cls: str) -> Iterator[str]:
    module = obj.get("module")
    if isinstance(module, str) and not _is_keras(module):
        yield (
            f"imports module {module[:100]!r}, outside Keras, when the model is loaded "
            "(CVE-2025-1550)"
        )
    registered = obj.get("registered_name")
    if isinstance(registered, str) and ">" in registered:
        package = registered.split(">", 1)[0]
        if not _is_keras(package):
            yield f"is the custom object {registered[:100]!r}, whose code comes from outside Keras"
    if cls in _LOADERS:
        yield _LOADERS[cls]
    name = obj.get("config")
    if cls == "function" and isinstance(name, str) and name.rsplit(".", 1)[-1] in _GADGETS:
        yield (
            f"calls the Keras utility {name[:100]!r}, which reaches files or the network "
            "(CVE-2025-8747)"
        )


def _is_keras(module: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in _KERAS_PACKAGES)


def _objects(config: object) -> Iterator[tuple[dict[str, object], str]]:
    """Every JSON object in ``config``, depth first, with its path (``config.layers[2]``)."""
    stack: list[tuple[object, str]] = [(config, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            yield value, path
            children = [(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()]
        elif isinstance(value, list):
            children = [(v, f"{path}[{i}]") for i, v in enumerate(value)]
        else:
            continue
        stack.extend(reversed(children))
