"""What a caller of a deployment gets back under its output policy (``docs/gateway.md``).

``full`` without rounding or noise passes the model's outputs through untouched. Any other
policy replaces them with the hardened view of the model's one probability output (a float
tensor shaped ``[batch, classes]``): ``scores`` (FP64) and, for ``top-k`` and ``label``,
``classes`` (INT64 class indices). The deployment's metadata shows what the caller's tier
gets, so clients see the outputs they will receive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bastion.errors import InputError, InternalError
from bastion.serving._hardening import OutputPolicy, harden
from bastion.serving._tensors import Datatype, ModelSignature, TensorSpec

__all__ = ["OutputShaper"]

_FLOATS = (Datatype.FP16, Datatype.FP32, Datatype.FP64)


def _is_passthrough(policy: OutputPolicy) -> bool:
    return policy.mode == "full" and policy.round_digits is None and policy.noise is None


def _score_output(signature: ModelSignature, policy: OutputPolicy) -> TensorSpec:
    found = [s for s in signature.outputs if s.datatype in _FLOATS and len(s.shape) == 2]
    if len(found) != 1:
        names = ", ".join(f"{s.name} {s.datatype.value} {list(s.shape)}" for s in signature.outputs)
        raise InputError(
            f"output policy {policy.to_text()!r} needs exactly one probability output shaped "
            f"[batch, classes]; the model's outputs are: {names}. Serve it with 'full'"
        )
    return found[0]


@dataclass(frozen=True)
class OutputShaper:
    """The outputs one caller tier sees, and how to make them from the model's."""

    policy: OutputPolicy
    #: The model's inputs with the outputs this tier gets.
    exposed: ModelSignature
    #: The model output hardened; None when the outputs pass through.
    scores: str | None

    @classmethod
    def build(cls, signature: ModelSignature, policy: OutputPolicy) -> OutputShaper:
        if _is_passthrough(policy):
            return cls(policy, signature, None)
        spec = _score_output(signature, policy)
        classes = spec.shape[1]
        outputs: list[TensorSpec] = []
        if policy.mode == "full":
            outputs.append(TensorSpec("scores", Datatype.FP64, (-1, classes)))
        elif policy.mode == "top-k":
            k = -1 if classes == -1 else min(int(policy.k or 1), classes)
            outputs.append(TensorSpec("scores", Datatype.FP64, (-1, k)))
            outputs.append(TensorSpec("classes", Datatype.INT64, (-1, k)))
        else:
            outputs.append(TensorSpec("classes", Datatype.INT64, (-1,)))
        return cls(policy, ModelSignature(signature.inputs, tuple(outputs)), spec.name)

    def model_outputs(self, requested: Sequence[str]) -> tuple[str, ...]:
        """The model outputs to compute for the ``requested`` exposed outputs."""
        return tuple(requested) if self.scores is None else (self.scores,)

    def apply(
        self,
        outputs: Mapping[str, np.ndarray[Any, Any]],
        requested: Sequence[str],
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray[Any, Any]]:
        """The ``requested`` exposed outputs, made from the model's ``outputs``."""
        if self.scores is None:
            return {name: outputs[name] for name in requested}
        try:
            hardened = harden(outputs[self.scores], self.policy, rng=rng).to_tensors()
        except InputError as exc:  # the model's own output is not a probability matrix
            raise InternalError(
                f"the model's output {self.scores!r} cannot be hardened: {exc.message}"
            ) from exc
        return {name: hardened[name] for name in requested}
