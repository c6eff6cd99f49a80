"""Keras legacy HDF5 (``.h5``) models: the configs kept in the root group's attributes.

``model.save("m.h5")`` writes the model's architecture as JSON into the root group's
``model_config`` attribute, and its compile settings into ``training_config``;
``load_model`` rebuilds the model from them, so a ``Lambda`` layer's marshalled
bytecode (CVE-2024-3660) or a module named in the config runs on load, whatever the
weights hold. The attributes are read with Bastion's own bounded HDF5 reader
(:mod:`bastion.scanning._hdf5`, never h5py), and every string attribute that holds
JSON is audited as a Keras config (:mod:`bastion.scanning._keras`), under any name.
Datasets and child groups are not read: Keras takes no code from them.
"""

from __future__ import annotations

import json
from typing import BinaryIO

from bastion.scanning._context import ScanContext
from bastion.scanning._hdf5 import Hdf5Error, Hdf5LimitError, read_root_attributes
from bastion.scanning._keras import audit_config, report

__all__ = ["scan_hdf5"]

_FMT = "hdf5"
#: The attributes ``load_model`` decodes as JSON; any other must look like JSON first.
_CONFIGS = frozenset({"model_config", "training_config"})


def scan_hdf5(ctx: ScanContext, stream: BinaryIO, member: str | None) -> None:
    """Audit the Keras configs in the root attributes of the HDF5 file in ``stream``."""
    try:
        root = read_root_attributes(stream)
    except Hdf5LimitError as exc:
        ctx.limit(f"HDF5 root attributes not read: {exc}", format=_FMT, member=member)
        return
    except Hdf5Error as exc:
        ctx.incomplete(
            f"HDF5 structure could not be read ({exc}); its attributes, where Keras keeps "
            "the model config, were not scanned",
            format=_FMT,
            member=member,
        )
        return
    ctx.mark_scanned(_FMT, member)
    for reason in root.unread:
        ctx.incomplete(f"HDF5 root attributes not all read: {reason}", format=_FMT, member=member)
    for attribute in root.attributes:
        name = attribute.name[:200]
        for i, raw in [*enumerate(attribute.strings), *attribute.copies]:
            where = name if len(attribute.strings) == 1 else f"{name}[{i}]"
            config = _config(raw)
            if config is not None:
                found = audit_config(config)
                report(ctx, _FMT, member, [(r, s, m, _join(where, p)) for r, s, m, p in found])
            elif attribute.name in _CONFIGS and raw.strip():
                ctx.incomplete(
                    f"HDF5 attribute {where!r} is not valid JSON; not scanned",
                    format=_FMT,
                    member=member,
                )


def _config(raw: bytes) -> object | None:
    """The JSON object or array in ``raw``, as Keras would decode it, or None.

    h5py hands back variable-length strings only up to their first NUL (C strings)
    and fixed-length ones whole, so both readings are tried.
    """
    for text in dict.fromkeys((raw, raw.split(b"\x00", 1)[0])):
        stripped = text.strip()
        if stripped[:1] not in (b"{", b"["):
            continue
        try:
            value = json.loads(text.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            continue
        if isinstance(value, (dict, list)):
            return value
    return None


def _join(attribute: str, path: str) -> str:
    return f"{attribute}.{path}" if path and not path.startswith("[") else attribute + path
