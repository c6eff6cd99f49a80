"""Converting a pickle-based PyTorch checkpoint to safetensors, without executing the pickle.

The checkpoint's structure is rebuilt by a restricted machine that honours
only tensor-rebuild globals (:mod:`bastion.scanning._rebuild`); every tensor
found in it is copied byte for byte from its storage into a safetensors file.
Nested dicts and lists become dotted names (``model.layer.weight``,
``optimizer.state.0.exp_avg``); entries that hold no tensor are left out and
reported. Tensors that share a storage are written as separate copies. The
file is written whole or not at all. See ``docs/scanning.md``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bastion.errors import InputError, PathNotFoundError, UsageError
from bastion.scanning._checkpoint import Checkpoint, read_checkpoint
from bastion.scanning._limits import Limits
from bastion.scanning._safetensors_writer import PlannedTensor, write_safetensors
from bastion.scanning._tensor_refs import SAFETENSORS_DTYPES, TensorRef

__all__ = ["ConvertResult", "convert"]

logger = logging.getLogger(__name__)

#: Containers within containers in a checkpoint's structure.
_MAX_DEPTH = 64
#: Values visited in a checkpoint's structure (shared values count each time they are reached).
_MAX_NODES = 1_000_000


@dataclass(frozen=True, slots=True)
class ConvertResult:
    """What :func:`convert` wrote, and what it left out."""

    source: str
    destination: str
    format: str
    """``pytorch-zip`` or ``pytorch-legacy``."""
    tensors: tuple[str, ...]
    """Names of the tensors written, in file order."""
    skipped: tuple[str, ...]
    """Entries of the checkpoint that hold no tensor (step counts, hyper-parameters)."""
    bytes_written: int

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "destination": self.destination,
            "format": self.format,
            "tensors": list(self.tensors),
            "skipped": list(self.skipped),
            "bytes_written": self.bytes_written,
        }


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    force: bool = False,
    limits: Limits | None = None,
) -> ConvertResult:
    """Write the tensors of the PyTorch checkpoint ``src`` to the safetensors file ``dst``.

    Nothing in ``src`` is executed or imported. Raises :class:`InputError` if
    the checkpoint calls anything but tensor-rebuild functions, holds a tensor
    safetensors cannot represent (complex, quantized, non-contiguous), or is
    malformed; ``dst`` is then left as it was. An existing ``dst`` is replaced
    only with ``force``.
    """
    source, target = Path(src), Path(dst)
    if not source.exists():
        raise PathNotFoundError(f"{source} does not exist")
    if not source.is_file():
        raise InputError(f"{source} is not a file; convert one checkpoint file at a time")
    if target.is_dir():
        raise InputError(f"{target} is a folder; name the .safetensors file to write")
    if not target.parent.is_dir():
        raise PathNotFoundError(f"{target.parent} does not exist")
    if target.exists():
        if target.resolve() == source.resolve():
            raise UsageError("the destination is the source file; write to another path")
        if not force:
            raise InputError(f"{target} already exists; pass --force to replace it")
    with source.open("rb") as f:
        limits = limits or Limits()
        checkpoint = read_checkpoint(f, limits)
        named, skipped = _collect(checkpoint.root)
        plan = _plan(checkpoint, named)
        total = sum(t.nbytes for t, _ in plan)
        if total > limits.max_unpacked_bytes:  # views of one storage are each copied
            raise InputError(
                f"refusing to convert: the tensors add up to {total} bytes "
                f"(the limit is {limits.max_unpacked_bytes})"
            )
        sources = {t.name: ref for t, ref in plan}

        def copy(tensor: PlannedTensor, out: BinaryIO) -> None:
            ref = sources[tensor.name]
            offset = ref.offset * SAFETENSORS_DTYPES[ref.dtype][1]
            checkpoint.copy(ref.storage.key, offset, tensor.nbytes, out)

        tensors = [t for t, _ in plan]
        size = write_safetensors(target, tensors, copy, metadata={"format": "pt"}, force=force)
    logger.info("converted %s to %s: %d tensor(s)", source, target, len(tensors))
    return ConvertResult(
        source=str(source),
        destination=str(target),
        format=checkpoint.format,
        tensors=tuple(t.name for t in tensors),
        skipped=tuple(skipped),
        bytes_written=size,
    )


def _collect(root: object) -> tuple[list[tuple[str, TensorRef]], list[str]]:
    """Every tensor under ``root`` with its dotted name, and the entries holding none."""
    tensors: list[tuple[str, TensorRef]] = []
    skipped: list[str] = []
    active: set[int] = set()
    nodes = 0

    def walk(value: object, name: str, depth: int) -> bool:
        nonlocal nodes
        nodes += 1
        if nodes > _MAX_NODES:
            raise InputError("refusing to convert: the checkpoint's structure is too large")
        if isinstance(value, TensorRef):
            tensors.append((name or "tensor", value))
            return True
        if isinstance(value, dict):
            children = [(_join(name, key), child) for key, child in value.items()]
        elif isinstance(value, list | tuple):
            children = [(_join(name, i), child) for i, child in enumerate(value)]
        else:
            return False
        if depth >= _MAX_DEPTH:
            raise InputError("refusing to convert: the checkpoint's structure is nested too deep")
        if id(value) in active:
            raise InputError("refusing to convert: the checkpoint's structure contains itself")
        active.add(id(value))
        found = False
        for child_name, child in children:
            before = len(skipped)
            if walk(child, child_name, depth + 1):
                found = True
            else:  # report the entry once, not each of its leaves
                del skipped[before:]
                skipped.append(child_name)
        active.discard(id(value))
        return found

    if not walk(root, "", 0):
        raise InputError("refusing to convert: the checkpoint holds no tensors")
    return tensors, skipped


def _join(prefix: str, key: object) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _plan(
    checkpoint: Checkpoint, named: list[tuple[str, TensorRef]]
) -> list[tuple[PlannedTensor, TensorRef]]:
    """Each tensor checked and sized, sorted by name."""
    plan: list[tuple[PlannedTensor, TensorRef]] = []
    seen: set[str] = set()
    for name, ref in sorted(named, key=lambda item: item[0]):
        if name in seen or name == "__metadata__":
            raise InputError(
                f"refusing to convert: two tensors would be named {name!r} (or the name is "
                "reserved); rename the checkpoint's keys"
            )
        seen.add(name)
        plan.append((_planned(checkpoint, name, ref), ref))
    return plan


def _planned(checkpoint: Checkpoint, name: str, ref: TensorRef) -> PlannedTensor:
    if ref.dtype not in SAFETENSORS_DTYPES:
        raise InputError(
            f"refusing to convert: tensor {name!r} has dtype {ref.dtype}, "
            "which safetensors cannot hold"
        )
    code, itemsize = SAFETENSORS_DTYPES[ref.dtype]
    if not _is_contiguous(ref.shape, ref.stride):
        raise InputError(
            f"refusing to convert: tensor {name!r} is not contiguous (shape {list(ref.shape)}, "
            f"stride {list(ref.stride)}); save it with .contiguous() or .clone() first"
        )
    storage = ref.storage
    storage_bytes = storage.numel * SAFETENSORS_DTYPES[storage.dtype][1]
    held = checkpoint.storage_size(storage.key)
    if held is None:
        raise InputError(f"refusing to convert: storage {storage.key!r} of {name!r} is missing")
    if held != storage_bytes:
        raise InputError(
            f"refusing to convert: storage {storage.key!r} holds {held} bytes, "
            f"not the {storage_bytes} its header says"
        )
    nbytes = math.prod(ref.shape) * itemsize
    if nbytes and (ref.offset * itemsize + nbytes > storage_bytes):
        raise InputError(f"refusing to convert: tensor {name!r} reads past the end of its storage")
    return PlannedTensor(name, code, ref.shape, nbytes)


def _is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """C order, as torch judges it: strides of dimensions of size 1 do not matter."""
    if 0 in shape:
        return True
    expected = 1
    for size, step in zip(reversed(shape), reversed(stride), strict=True):
        if size != 1 and step != expected:
            return False
        expected *= size
    return True
