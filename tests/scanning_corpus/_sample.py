"""What the corpus generator hands back for each file it writes."""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LOADERS", "NOT_INSTALLED", "Payload", "Reduce", "Sample"]

#: How a sample is loaded by the real library (see ``_load.py``). ``zip/torch``,
#: ``tar/pickle``, ``tar/torch``, ``7z/torch`` and ``7z/pickle`` unpack the single inner
#: member first, as a user would; ``sharded/torch`` loads every shard that the folder's
#: ``pytorch_model.bin.index.json`` names; ``tensorflow`` loads a ``saved_model.pb`` (copied
#: into a folder of its own) with ``tf.saved_model.load``.
LOADERS = (
    "pickle",
    "pickle-stream",
    "torch",
    "joblib",
    "numpy",
    "pandas",
    "safetensors",
    "zip/torch",
    "tar/pickle",
    "onnx",
    "keras",
    "keras-h5",
    "7z/torch",
    "7z/pickle",
    "tar/torch",
    "sharded/torch",
    "tensorflow",
)

#: Loaders whose library is not installed with the project: the corpus tests cannot prove
#: these samples with their real loader, so they do not load them. This is no claim that
#: the loader would not run the payload (``Sample.loader_runs_payload`` stays True); the
#: module that writes such samples says how they were checked by hand.
NOT_INSTALLED = frozenset({"tensorflow"})


@dataclass(frozen=True, slots=True)
class Sample:
    """One generated file.

    ``marker`` is the file the inert payload creates when ``loader`` runs it; ``None``
    for benign samples, and for the one malicious sample whose effect is a module
    attribute (BUILD on a module). ``loader_runs_payload`` is False where the real
    loader is known *not* to run the payload (a differential that matters to other
    readers, kept as a regression sample).
    """

    name: str
    path: Path
    technique: str
    expects_detection: bool
    loader: str
    marker: Path | None = None
    loader_runs_payload: bool = True

    def __post_init__(self) -> None:
        if self.loader not in LOADERS:
            raise ValueError(f"{self.name}: unknown loader {self.loader!r}")


@dataclass(frozen=True, slots=True)
class Payload:
    """The inert things a payload may do, all of which only create ``marker``."""

    marker: Path

    @property
    def shell(self) -> str:
        """A shell command line."""
        return f"touch {shlex.quote(str(self.marker))}"

    @property
    def python(self) -> str:
        """A Python expression (usable with eval, exec and compile)."""
        return f"open({str(self.marker)!r}, 'w').close()"

    @property
    def argv(self) -> list[str]:
        """An argument vector for a process spawner."""
        return ["touch", str(self.marker)]

    @property
    def executable(self) -> bytes:
        """The absolute path of ``touch``, for spawners that take no PATH search."""
        found = shutil.which("touch")
        if found is None:
            raise RuntimeError("the corpus needs a touch(1) on PATH")
        return found.encode()


class Reduce:
    """An object that pickles as ``func(*args)``. Pickling it runs nothing.

    For payloads that must be written by a library's own pickler (torch.save,
    joblib.dump, numpy, pandas), where the assembler cannot be used.
    """

    def __init__(self, func: object, *args: object) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


@dataclass(frozen=True, slots=True)
class Recipe:
    """How to write one malicious sample: ``build`` turns a payload into file bytes."""

    name: str
    technique: str
    build: Callable[[Payload], bytes]
    loader: str = "pickle"
    loader_runs_payload: bool = True


def write_recipes(recipes: Iterable[Recipe], outdir: Path, markers: Path) -> list[Sample]:
    """Write each recipe's file into ``outdir``; its payload's marker goes under ``markers``."""
    samples = []
    for recipe in recipes:
        path = outdir / recipe.name
        payload = Payload(markers / recipe.name)
        path.write_bytes(recipe.build(payload))
        samples.append(
            Sample(
                recipe.name,
                path,
                recipe.technique,
                expects_detection=True,
                loader=recipe.loader,
                marker=payload.marker,
                loader_runs_payload=recipe.loader_runs_payload,
            )
        )
    return samples
