"""Output hardening: what the gateway returns of a model's class scores (issue 6).

A deployment (and each caller tier of it) has an :class:`OutputPolicy`, written as text on
the command line, ``bastion deploy ... --output top-k=3,round=2``:

* ``full`` returns every class score, ``top-k=N`` the N best classes and their scores,
  ``label`` only the best class;
* ``round=D`` rounds the returned scores to D decimals (0 to 6; not with ``label``);
* ``noise=laplace:S`` or ``noise=gaussian:S`` adds calibrated noise of scale S (0 < S <= 1)
  to the scores before anything else, then clips them to [0, 1]. With ``label`` the noise
  is added *before* the argmax, so near-ties may flip: that is the point.

Returning less makes model extraction and membership inference harder; ``docs/gateway.md``
records the effect on accuracy. :func:`harden` applies a policy to a batch of probabilities.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bastion.errors import InputError, UsageError

__all__ = [
    "MAX_ROUND_DIGITS",
    "MAX_TOP_K",
    "HardenedOutput",
    "NoiseSpec",
    "OutputPolicy",
    "OutputTiers",
    "harden",
]

MAX_TOP_K = 100
MAX_ROUND_DIGITS = 6
MAX_NOISE_SCALE = 1.0
_MAX_POLICY_TEXT = 200
_PROBABILITY_SLACK = 1e-6  # float32 softmax outputs may exceed 1 by a few ulps
#: Score matrices up to this many elements are checked in Python, quicker than numpy there;
#: only of the dtypes whose ``tolist`` gives Python floats.
_SMALL_SCORES = 64
_PYTHON_FLOATS = frozenset(np.dtype(name) for name in ("float16", "float32", "float64"))
_POLICY_HELP = "use full, label or top-k=N, then optionally round=D and noise=laplace:S"
_UNSIGNED = re.compile(r"[0-9]{1,6}")
_DECIMAL = re.compile(r"(?:[0-9]{1,20}(?:\.[0-9]{0,40})?|\.[0-9]{1,40})(?:[eE][-+]?[0-9]{1,3})?")
_TIER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")

_Element = TypeVar("_Element", bound=np.generic)
Mode = Literal["full", "top-k", "label"]
NoiseKind = Literal["laplace", "gaussian"]


def _shown(text: str) -> str:
    """``text`` quoted for an error message, cut short if long."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


@dataclass(frozen=True)
class NoiseSpec:
    """Calibrated noise added to scores: Laplace or Gaussian, zero mean, ``scale`` in (0, 1].

    ``scale`` is the Gaussian's standard deviation, or the Laplace distribution's ``b``
    (standard deviation ``b * sqrt(2)``).
    """

    kind: NoiseKind
    scale: float

    def __post_init__(self) -> None:
        if self.kind not in ("laplace", "gaussian"):
            raise InputError(
                f"unknown noise kind {_shown(str(self.kind))}: use laplace or gaussian"
            )
        scale = self.scale
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            raise InputError("noise scale must be a number: give e.g. noise=laplace:0.01")
        if not (math.isfinite(scale) and 0 < scale <= MAX_NOISE_SCALE):
            raise InputError(
                f"noise scale {scale!r} is out of range: give a number above 0 and at most "
                f"{MAX_NOISE_SCALE}, e.g. noise=laplace:0.01"
            )
        object.__setattr__(self, "scale", float(scale))

    @classmethod
    def parse(cls, text: str) -> NoiseSpec:
        """``laplace:0.01`` or ``gaussian:0.05``; InputError naming the bad part otherwise."""
        kind, sep, value = text.partition(":")
        if not sep or kind not in ("laplace", "gaussian"):
            raise InputError(
                f"noise {_shown(text)} is not KIND:SCALE: give noise=laplace:0.01 or "
                "noise=gaussian:0.01"
            )
        if not _DECIMAL.fullmatch(value):
            raise InputError(
                f"noise scale {_shown(value)} is not a positive decimal number: give e.g. "
                f"noise={kind}:0.01"
            )
        return cls(kind=cast(NoiseKind, kind), scale=float(value))

    def to_text(self) -> str:
        """The ``KIND:SCALE`` text that :meth:`parse` reads back to an equal spec."""
        return f"{self.kind}:{self.scale!r}"

    def sample(self, shape: tuple[int, ...], rng: np.random.Generator) -> NDArray[np.float64]:
        """Zero-mean noise of this kind and scale, drawn from ``rng``."""
        if self.kind == "laplace":
            return rng.laplace(0.0, self.scale, size=shape)
        return rng.normal(0.0, self.scale, size=shape)


@dataclass(frozen=True)
class OutputPolicy:
    """How much of a model's scores a caller gets: the mode, then rounding and noise.

    ``mode`` is ``full``, ``top-k`` (with ``k`` from 1 to :data:`MAX_TOP_K`) or ``label``;
    ``round_digits`` is None or 0 to :data:`MAX_ROUND_DIGITS` (not with ``label``, which
    returns no score); ``noise`` is None or a :class:`NoiseSpec`.
    """

    mode: Mode = "full"
    k: int | None = None
    round_digits: int | None = None
    noise: NoiseSpec | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("full", "top-k", "label"):
            raise InputError(f"unknown output mode {_shown(str(self.mode))}: {_POLICY_HELP}")
        if self.mode == "top-k":
            if not _is_int(self.k) or not 1 <= cast(int, self.k) <= MAX_TOP_K:
                raise InputError(
                    f"top-k needs k from 1 to {MAX_TOP_K}, not {self.k!r}: give e.g. top-k=3"
                )
        elif self.k is not None:
            raise InputError(f"k applies only to top-k, not to {self.mode}: drop it")
        digits = self.round_digits
        if digits is not None:
            if not _is_int(digits) or not 0 <= digits <= MAX_ROUND_DIGITS:
                raise InputError(
                    f"round={digits!r} is out of range: give 0 to {MAX_ROUND_DIGITS} decimals"
                )
            if self.mode == "label":
                raise InputError("round does not apply to label, which returns no score: drop it")
        if self.noise is not None and not isinstance(self.noise, NoiseSpec):
            raise InputError("noise must be a NoiseSpec: give e.g. noise=laplace:0.01")

    @classmethod
    def parse(cls, text: str) -> OutputPolicy:
        """Read ``top-k=3,round=2``, ``label``, ``full,round=3,noise=laplace:0.02``.

        Parts are separated by commas, in any order, each at most once; the mode defaults to
        ``full``. Anything else raises InputError naming the bad part.
        """
        if not isinstance(text, str):
            raise InputError(f"an output policy is text, not {type(text).__name__}")
        if len(text) > _MAX_POLICY_TEXT:
            raise InputError(f"output policy is over {_MAX_POLICY_TEXT} characters: {_POLICY_HELP}")
        if not text.strip():
            raise InputError(f"output policy is empty: {_POLICY_HELP}")
        mode: Mode | None = None
        k: int | None = None
        digits: int | None = None
        noise: NoiseSpec | None = None
        seen: set[str] = set()
        for raw in text.split(","):
            part = raw.strip()
            key, sep, value = (piece.strip() for piece in part.partition("="))
            slot = "mode" if key in ("full", "label", "top-k") else key
            if slot in seen:
                raise InputError(f"output policy {_shown(text)} gives {slot} twice: keep one")
            seen.add(slot)
            if key in ("full", "label") and not sep:
                mode = cast(Mode, key)
            elif key == "top-k" and sep:
                mode, k = "top-k", _parse_unsigned(value, part)
            elif key == "round" and sep:
                digits = _parse_unsigned(value, part)
            elif key == "noise" and sep:
                noise = NoiseSpec.parse(value)
            else:
                raise InputError(
                    f"output policy part {_shown(part)} is not understood: {_POLICY_HELP}"
                )
        return cls(mode=mode or "full", k=k, round_digits=digits, noise=noise)

    def to_text(self) -> str:
        """The canonical text of this policy; :meth:`parse` reads it back to an equal policy."""
        parts = [f"top-k={self.k}" if self.mode == "top-k" else self.mode]
        if self.round_digits is not None:
            parts.append(f"round={self.round_digits}")
        if self.noise is not None:
            parts.append(f"noise={self.noise.to_text()}")
        return ",".join(parts)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_unsigned(value: str, part: str) -> int:
    if not _UNSIGNED.fullmatch(value):
        raise InputError(f"output policy part {_shown(part)} needs a whole number after '='")
    return int(value)


class OutputTiers(Mapping[str, OutputPolicy]):
    """The output policy of each caller tier of a deployment; a ``default`` tier is required.

    Tier names are lower-case (``default``, ``trusted``, ``partner-a``); a caller whose tier
    has no entry gets the ``default`` policy, so an unknown tier never gets more.
    """

    def __init__(self, policies: Mapping[str, OutputPolicy]) -> None:
        checked: dict[str, OutputPolicy] = {}
        for name, policy in policies.items():
            if not isinstance(name, str) or not _TIER_NAME.fullmatch(name):
                raise InputError(
                    f"tier name {_shown(str(name))} is not valid: use lower-case letters, digits, "
                    "'-' and '_', starting with a letter"
                )
            if not isinstance(policy, OutputPolicy):
                raise InputError(f"tier {name!r} needs an OutputPolicy")
            checked[name] = policy
        if "default" not in checked:
            raise InputError("output tiers need a 'default' tier: add default=<policy>")
        self._policies = checked

    @classmethod
    def from_dict(cls, policies: Mapping[str, str | OutputPolicy]) -> OutputTiers:
        """Tiers from ``{"default": "top-k=3,round=2", "trusted": "full"}`` (text or policies)."""
        if not isinstance(policies, Mapping):
            raise InputError("output tiers are a mapping of tier name to policy")
        return cls(
            {
                name: OutputPolicy.parse(value) if isinstance(value, str) else value
                for name, value in policies.items()
            }
        )

    def to_dict(self) -> dict[str, str]:
        """Each tier's policy as text; :meth:`from_dict` reads it back."""
        return {name: policy.to_text() for name, policy in self._policies.items()}

    def for_tier(self, name: str | None) -> OutputPolicy:
        """The policy of tier ``name``, or the ``default`` policy when it has none."""
        if name is not None and name in self._policies:
            return self._policies[name]
        return self._policies["default"]

    def __getitem__(self, name: str) -> OutputPolicy:
        return self._policies[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._policies)

    def __len__(self) -> int:
        return len(self._policies)

    def __repr__(self) -> str:
        return f"OutputTiers({self.to_dict()!r})"


@dataclass(frozen=True, eq=False)
class HardenedOutput:
    """What the gateway sends for one batch under an :class:`OutputPolicy` (arrays read-only).

    ``full``: ``scores`` [batch, classes]. ``top-k``: ``scores`` and ``classes`` [batch, k],
    best first. ``label``: ``classes`` [batch]. ``labels`` holds the class names of
    ``classes`` (same shape) when names were given to :func:`harden`.
    """

    mode: Mode
    scores: NDArray[np.float64] | None = None
    classes: NDArray[np.int64] | None = None
    labels: NDArray[np.object_] | None = None

    def predicted_classes(self) -> NDArray[np.int64]:
        """The class each row ranks first (ties to the lowest index): what a caller would pick."""
        if self.mode == "full":
            assert self.scores is not None
            best: NDArray[np.int64] = np.argmax(self.scores, axis=1).astype(np.int64)
            return best
        assert self.classes is not None
        if self.mode == "label":
            return self.classes
        first: NDArray[np.int64] = self.classes[:, 0]
        return first

    def to_tensors(self) -> dict[str, NDArray[np.generic]]:
        """Named output tensors for the Open Inference Protocol response.

        ``scores`` FP64 [batch, classes] (full) or [batch, k] (top-k); ``classes`` INT64
        [batch, k] (top-k) or [batch] (label); ``labels`` BYTES (UTF-8), the shape of
        ``classes``, only when class names were given. FP64 keeps rounded scores exact in JSON.
        """
        tensors: dict[str, NDArray[np.generic]] = {}
        if self.scores is not None:
            tensors["scores"] = self.scores
        if self.classes is not None:
            tensors["classes"] = self.classes
        if self.labels is not None:
            encoded = np.empty(self.labels.shape, dtype=np.object_)
            for index, name in np.ndenumerate(self.labels):
                encoded[index] = str(name).encode("utf-8")
            tensors["labels"] = encoded
        return tensors


def harden(
    scores: ArrayLike,
    policy: OutputPolicy,
    *,
    labels: Sequence[str] | None = None,
    rng: np.random.Generator,
) -> HardenedOutput:
    """Apply ``policy`` to ``scores``, a [batch, classes] matrix of probabilities in [0, 1].

    Noise (if any) comes first, then clipping to [0, 1]. ``full`` then re-normalises noised
    rows to sum to 1 (a row clipped to all zeros becomes uniform) and rounds. ``top-k``
    ranks the (noised) scores, ties to the lowest class index, keeps the k best (k is cut to
    the number of classes) and rounds their scores. ``label`` takes the argmax of the noised
    scores, ties to the lowest index. Raises InputError for scores that are not a finite,
    non-empty 2-D matrix in [0, 1], or names that do not match the classes.
    """
    if not isinstance(policy, OutputPolicy):
        raise UsageError("harden needs an OutputPolicy: build one with OutputPolicy.parse")
    if not isinstance(rng, np.random.Generator):
        raise UsageError("harden needs rng=numpy.random.Generator, e.g. numpy.random.default_rng()")
    work = _validated_scores(scores)
    names = _validated_labels(labels, work.shape[1])
    if policy.noise is not None:
        work = np.clip(work + policy.noise.sample(work.shape, rng), 0.0, 1.0)
    if policy.mode == "label":
        winners = np.argmax(work, axis=1).astype(np.int64)
        return HardenedOutput(mode="label", classes=_frozen(winners), labels=_names(names, winners))
    if policy.mode == "full":
        if policy.noise is not None:
            work = _renormalised(work)
        return HardenedOutput(mode="full", scores=_frozen(_rounded(work, policy.round_digits)))
    k = min(cast(int, policy.k), work.shape[1])
    order = np.argsort(-work, axis=1, kind="stable")[:, :k].astype(np.int64)
    top = _rounded(np.take_along_axis(work, order, axis=1), policy.round_digits)
    return HardenedOutput(
        mode="top-k", scores=_frozen(top), classes=_frozen(order), labels=_names(names, order)
    )


def _validated_scores(scores: ArrayLike) -> NDArray[np.float64]:
    try:
        matrix = np.asarray(scores)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError("scores are not a numeric matrix: give a [batch, classes] array") from exc
    if matrix.dtype.kind not in "fiu":
        raise InputError(f"scores must be real numbers, not {matrix.dtype}: give probabilities")
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise InputError(
            f"scores must be a non-empty [batch, classes] matrix, not of shape {matrix.shape}"
        )
    if (
        matrix.size <= _SMALL_SCORES
        and matrix.dtype in _PYTHON_FLOATS
        and _strictly_probabilities(matrix.ravel().tolist())
    ):
        return matrix.astype(np.float64)  # what clipping would return: nothing is clipped
    if not np.isfinite(matrix).all():
        raise InputError("scores hold NaN or infinity: the model's output cannot be served")
    if (matrix < 0).any() or (matrix > 1 + _PROBABILITY_SLACK).any():
        raise InputError(
            "scores must be probabilities in [0, 1]: apply softmax or sigmoid to logits first"
        )
    return np.clip(matrix.astype(np.float64), 0.0, 1.0)


def _strictly_probabilities(values: list[float]) -> bool:
    """Whether ``values`` are all finite and in (0, 1]: a finite sum means no NaN or inf.

    Zeros take the numpy path, so that a -0.0 is clipped exactly as ``np.clip`` does.
    """
    return math.isfinite(sum(values)) and min(values) > 0 and max(values) <= 1


def _validated_labels(labels: Sequence[str] | None, classes: int) -> tuple[str, ...] | None:
    if labels is None:
        return None
    if isinstance(labels, str | bytes) or not all(isinstance(name, str) for name in labels):
        raise InputError("labels must be a sequence of class names (strings)")
    if len(labels) != classes:
        raise InputError(f"{len(labels)} labels given for {classes} classes: give one per class")
    return tuple(labels)


def _rounded(work: NDArray[np.float64], digits: int | None) -> NDArray[np.float64]:
    return work if digits is None else work.round(digits)  # np.round, without its wrapper


def _renormalised(work: NDArray[np.float64]) -> NDArray[np.float64]:
    totals = work.sum(axis=1, keepdims=True)
    uniform = np.full_like(work, 1.0 / work.shape[1])
    safe = np.where(totals > 0, totals, 1.0)
    return np.where(totals > 0, work / safe, uniform)


def _names(names: tuple[str, ...] | None, indices: NDArray[np.int64]) -> NDArray[np.object_] | None:
    if names is None:
        return None
    table = np.array(names, dtype=np.object_)
    return _frozen(table[indices])


def _frozen(array: NDArray[_Element]) -> NDArray[_Element]:
    array.setflags(write=False)
    return array
