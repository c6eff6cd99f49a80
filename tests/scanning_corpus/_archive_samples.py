"""Archives around model files: 7z, lz4, tar.gz and Hugging Face sharded folders
(scanner-threats.md §B.23, §C.31).

Malicious: a malicious torch zip inside a 7z (nullifAI shipped PyTorch models in 7z),
a pickle inside a 7z under a harmless name, a joblib file compressed with lz4, a
malicious torch zip inside a tar.gz, and a sharded checkpoint folder whose second
shard is malicious. Benign: a 7z of a state dict, an lz4 joblib of an sklearn
pipeline, and a clean sharded folder.

A sharded sample is a folder, but a sample is named by one file (the corpus tests
treat every sample as a file, and the folder scan names the file a finding is in):
its ``name`` is the folder's last shard, ``<folder>/pytorch_model-00002-of-00002.bin``,
and the ``sharded/torch`` loader loads the whole folder through its
``pytorch_model.bin.index.json``, as ``transformers`` does.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.scanning_corpus._benign import _pipeline, _state_dict
from tests.scanning_corpus._containers import _joblib, _torch_bytes, _torch_zip
from tests.scanning_corpus._sample import Payload, Reduce, Sample

__all__ = [
    "ARCHIVE_BENIGN",
    "ARCHIVE_MALICIOUS",
    "SHARD_INDEX",
    "shard_name",
    "write_archive_benign",
    "write_archive_malicious",
]

#: The index file of a sharded checkpoint, as ``transformers`` writes and reads it.
SHARD_INDEX = "pytorch_model.bin.index.json"
SHARDS = 2


def shard_name(number: int, total: int = SHARDS) -> str:
    return f"pytorch_model-{number:05d}-of-{total:05d}.bin"


def _sevenzip(members: dict[str, bytes]) -> bytes:
    import py7zr

    out = io.BytesIO()
    with py7zr.SevenZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(data, name)
    return out.getvalue()


def _tar_gz(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _evil_pickle(p: Payload) -> bytes:
    import pickle

    return pickle.dumps(Reduce(os.system, p.shell), protocol=4)


def _write_sharded(path: Path, last_shard_extra: dict[str, Any]) -> None:
    """A two-shard checkpoint in ``path.parent``; ``path`` is its last shard.

    The first shard holds the first layer's tensors, the last one the second layer's
    plus ``last_shard_extra``; the index maps every tensor to its shard.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    state = _state_dict("float32")
    keys = list(state)
    halves = [keys[: len(keys) // 2], keys[len(keys) // 2 :]]
    weight_map: dict[str, str] = {}
    for number, names in enumerate(halves, start=1):
        shard = {key: state[key] for key in names}
        weight_map.update(dict.fromkeys(names, shard_name(number)))
        if number == SHARDS:
            shard.update(last_shard_extra)
        (folder / shard_name(number)).write_bytes(_torch_bytes(shard))
    total = sum(int(t.numel() * t.element_size()) for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / SHARD_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    if path.name != shard_name(SHARDS):
        raise RuntimeError(f"{path.name}: a sharded sample is named by its last shard")


@dataclass(frozen=True)
class ArchiveSample:
    """One sample; ``write(path, payload)`` writes it (``payload`` is None when benign)."""

    name: str
    technique: str
    loader: str
    write: Callable[[Path, Payload | None], None]


def _bytes(build: Callable[[Payload], bytes]) -> Callable[[Path, Payload | None], None]:
    def write(path: Path, payload: Payload | None) -> None:
        assert payload is not None
        path.write_bytes(build(payload))

    return write


def _benign_bytes(build: Callable[[], bytes]) -> Callable[[Path, Payload | None], None]:
    return lambda path, _payload: path.write_bytes(build())


def _sharded_evil(path: Path, payload: Payload | None) -> None:
    assert payload is not None
    _write_sharded(path, {"config": Reduce(os.system, payload.shell)})


def _benign_lz4_joblib() -> bytes:
    import joblib

    out = io.BytesIO()
    joblib.dump(_pipeline(), out, compress=("lz4", 3))
    return out.getvalue()


ARCHIVE_MALICIOUS = (
    ArchiveSample(
        "nullifai_torch_zip_in_7z.7z",
        "C.31 nullifAI: a malicious torch zip (pytorch_model.bin) inside a 7z archive",
        "7z/torch",
        _bytes(lambda p: _sevenzip({"pytorch_model.bin": _torch_zip(p)})),
    ),
    ArchiveSample(
        "pickle_in_7z_harmless_name.7z",
        "C.31 a malicious pickle inside a 7z, named like a text file (vocab.txt)",
        "7z/pickle",
        _bytes(lambda p: _sevenzip({"tokenizer/vocab.txt": _evil_pickle(p)})),
    ),
    ArchiveSample(
        "joblib_lz4_payload.joblib.lz4",
        "B.23 joblib lz4-compressed (compress='lz4'), payload after an array",
        "joblib",
        _bytes(lambda p: _joblib(p, ("lz4", 3))),
    ),
    ArchiveSample(
        "torch_zip_in_tar_gz.tar.gz",
        "C.31 a tar.gz holding a malicious torch zip",
        "tar/torch",
        _bytes(lambda p: _tar_gz("model/pytorch_model.bin", _torch_zip(p))),
    ),
    ArchiveSample(
        f"hf_sharded_torch/{shard_name(SHARDS)}",
        "C.31 Hugging Face sharded checkpoint folder: shard 1 and the index clean, the last "
        "shard's pickle calls os.system",
        "sharded/torch",
        _sharded_evil,
    ),
)

ARCHIVE_BENIGN = (
    ArchiveSample(
        "torch_state_dict.7z",
        "torch state_dict (pytorch_model.bin) inside a 7z archive",
        "7z/torch",
        _benign_bytes(
            lambda: _sevenzip({"pytorch_model.bin": _torch_bytes(_state_dict("float32"))})
        ),
    ),
    ArchiveSample(
        "sklearn_pipeline.joblib.lz4",
        "sklearn Pipeline, joblib.dump(compress=('lz4', 3))",
        "joblib",
        _benign_bytes(_benign_lz4_joblib),
    ),
    ArchiveSample(
        f"hf_sharded_clean/{shard_name(SHARDS)}",
        "Hugging Face sharded state dict: two shards and pytorch_model.bin.index.json",
        "sharded/torch",
        lambda path, _payload: _write_sharded(path, {}),
    ),
)


def write_archive_benign(outdir: Path) -> list[Sample]:
    samples = []
    for item in ARCHIVE_BENIGN:
        path = outdir / item.name
        item.write(path, None)
        samples.append(Sample(item.name, path, item.technique, False, item.loader))
    return samples


def write_archive_malicious(outdir: Path, markers: Path) -> list[Sample]:
    samples = []
    for item in ARCHIVE_MALICIOUS:
        path = outdir / item.name
        payload = Payload(markers / item.name.replace("/", "_"))
        item.write(path, payload)
        samples.append(
            Sample(item.name, path, item.technique, True, item.loader, marker=payload.marker)
        )
    return samples
