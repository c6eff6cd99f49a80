"""Generate the scanner's test corpus: benign model files and malicious ones.

Malicious samples carry inert payloads: each only creates its own marker file,
``<outdir>/markers/<sample name>``, and only when the real loader runs it. Writing
the corpus runs no payload (it pickles objects whose ``__reduce__`` names a gadget,
or writes opcodes); :func:`build_corpus` checks that no marker exists afterwards.
The techniques come from ``shared/reference/scanner-threats.md``; samples are named
after the CVE or advisory they reproduce where there is one.

Usage: ``python -m tests.scanning_corpus.generate OUTDIR`` writes the corpus and
``OUTDIR/manifest.json`` describing every sample.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tests.scanning_corpus._archive_samples import (
    ARCHIVE_BENIGN,
    ARCHIVE_MALICIOUS,
    write_archive_benign,
    write_archive_malicious,
)
from tests.scanning_corpus._benign import BENIGN, write_benign_samples
from tests.scanning_corpus._containers import CONTAINERS, write_container_samples
from tests.scanning_corpus._frameworks import (
    FRAMEWORK_BENIGN,
    FRAMEWORK_MALICIOUS,
    write_framework_benign,
    write_framework_malicious,
)
from tests.scanning_corpus._gadgets import GADGETS, write_gadget_samples
from tests.scanning_corpus._hdf5_samples import (
    H5_BENIGN,
    H5_MALICIOUS,
    write_h5_benign,
    write_h5_malicious,
)
from tests.scanning_corpus._more_gadgets import (
    MORE_BENIGN,
    MORE_GADGETS,
    write_more_benign_samples,
    write_more_gadget_samples,
)
from tests.scanning_corpus._opcode_tricks import TRICKS, write_opcode_samples
from tests.scanning_corpus._sample import LOADERS, NOT_INSTALLED, Sample
from tests.scanning_corpus._savedmodel_samples import (
    SAVEDMODEL_BENIGN,
    SAVEDMODEL_MALICIOUS,
    write_savedmodel_benign,
    write_savedmodel_malicious,
)

__all__ = [
    "BENIGN_NAMES",
    "LOADERS",
    "MALICIOUS_NAMES",
    "NOT_INSTALLED",
    "NOT_LOADED_HERE",
    "Sample",
    "build_corpus",
    "main",
    "write_benign",
    "write_malicious",
]

#: Sample names, known without writing anything (for test parametrization).
BENIGN_NAMES: tuple[str, ...] = tuple(
    item.name
    for item in (
        *BENIGN,
        *FRAMEWORK_BENIGN,
        *H5_BENIGN,
        *ARCHIVE_BENIGN,
        *MORE_BENIGN,
        *SAVEDMODEL_BENIGN,
    )
)
MALICIOUS_NAMES: tuple[str, ...] = tuple(
    item.name
    for table in (
        GADGETS,
        TRICKS,
        CONTAINERS,
        FRAMEWORK_MALICIOUS,
        H5_MALICIOUS,
        ARCHIVE_MALICIOUS,
        MORE_GADGETS,
        SAVEDMODEL_MALICIOUS,
    )
    for item in table
)
#: Samples whose loader is ``NOT_INSTALLED`` (TensorFlow SavedModels): not loaded here.
NOT_LOADED_HERE: frozenset[str] = frozenset(
    item.name for item in (*SAVEDMODEL_BENIGN, *SAVEDMODEL_MALICIOUS)
)


def write_benign(outdir: Path) -> list[Sample]:
    """Write the benign samples into ``outdir``."""
    outdir.mkdir(parents=True, exist_ok=True)
    return [
        *write_benign_samples(outdir),
        *write_framework_benign(outdir),
        *write_h5_benign(outdir),
        *write_archive_benign(outdir),
        *write_more_benign_samples(outdir),
        *write_savedmodel_benign(outdir),
    ]


def write_malicious(outdir: Path, markers: Path) -> list[Sample]:
    """Write the malicious samples into ``outdir``; their payloads touch files in ``markers``."""
    outdir.mkdir(parents=True, exist_ok=True)
    markers.mkdir(parents=True, exist_ok=True)
    return [
        *write_gadget_samples(outdir, markers),
        *write_opcode_samples(outdir, markers),
        *write_container_samples(outdir, markers),
        *write_framework_malicious(outdir, markers),
        *write_h5_malicious(outdir, markers),
        *write_archive_malicious(outdir, markers),
        *write_more_gadget_samples(outdir, markers),
        *write_savedmodel_malicious(outdir, markers),
    ]


def build_corpus(root: Path) -> list[Sample]:
    """Write the whole corpus under ``root``: ``benign/``, ``malicious/`` and ``markers/``."""
    markers = root / "markers"
    samples = [*write_benign(root / "benign"), *write_malicious(root / "malicious", markers)]
    names = [sample.name for sample in samples]
    if len(set(names)) != len(names) or names != [*BENIGN_NAMES, *MALICIOUS_NAMES]:
        raise RuntimeError("sample names must be unique and match the tables")
    if any(markers.iterdir()):
        raise RuntimeError(f"writing the corpus ran a payload: {sorted(markers.iterdir())}")
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    args = parser.parse_args(argv)
    samples = build_corpus(args.outdir)
    manifest = [
        {
            "name": s.name,
            "path": str(s.path.relative_to(args.outdir)),
            "technique": s.technique,
            "expects_detection": s.expects_detection,
            "loader": s.loader,
            "marker": None if s.marker is None else str(s.marker.relative_to(args.outdir)),
            "loader_runs_payload": s.loader_runs_payload,
        }
        for s in samples
    ]
    (args.outdir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    benign = sum(not s.expects_detection for s in samples)
    sys.stdout.write(f"{len(samples)} samples ({benign} benign) in {args.outdir}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
