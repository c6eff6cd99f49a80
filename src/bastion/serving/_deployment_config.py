"""How a deployment serves: output policy per caller tier, input bounds, rollout thresholds,
and the upstream server it fronts, if any. Stored as JSON with the deployment.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from bastion.errors import InputError
from bastion.serving._hardening import OutputPolicy, OutputTiers
from bastion.serving._oip import InferLimits
from bastion.serving._rollout_guard import RolloutThresholds
from bastion.serving._upstream import check_base_url

__all__ = ["FORMAT", "DeploymentConfig", "UpstreamTarget", "parse_value_ranges"]

#: The version of the stored form; readers refuse any other.
FORMAT = 1
_KEYS = {"format", "output", "value_ranges", "max_batch", "max_body_bytes", "rollout", "upstream"}
#: The most value ranges one deployment may declare.
_MAX_RANGES = 64
#: A model name on an upstream server (Triton and MLServer allow upper case).
_UPSTREAM_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class UpstreamTarget:
    """An existing Open Inference Protocol server and the model name it serves."""

    url: str
    model: str

    def __post_init__(self) -> None:
        check_base_url(self.url)
        if not isinstance(self.model, str) or not _UPSTREAM_MODEL.fullmatch(self.model):
            raise InputError(
                "the upstream model name must be 1-128 letters, digits, '.', '_' or '-'"
            )


def parse_value_ranges(text: str) -> dict[str, tuple[float, float]]:
    """``input=LOW:HIGH`` pairs separated by commas, e.g. ``input=0:1,age=0:120``."""
    ranges: dict[str, tuple[float, float]] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, bounds = part.partition("=")
        low, colon, high = bounds.partition(":")
        if not sep or not colon:
            raise InputError(f"value range {part[:80]!r}: write INPUT=LOW:HIGH")
        try:
            ranges[name.strip()] = (float(low), float(high))
        except ValueError:
            raise InputError(f"value range {part[:80]!r}: LOW and HIGH must be numbers") from None
    return _checked_ranges(ranges)


def _checked_ranges(value: object) -> dict[str, tuple[float, float]]:
    if not isinstance(value, Mapping) or len(value) > _MAX_RANGES:
        raise InputError(f"value_ranges must map at most {_MAX_RANGES} input names to [low, high]")
    ranges: dict[str, tuple[float, float]] = {}
    for name, bounds in value.items():
        if not isinstance(name, str) or not name or len(name) > 128:
            raise InputError("value_ranges: input names must be text of 1-128 characters")
        if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
            raise InputError(f"value range of {name!r}: give [low, high]")
        low, high = bounds
        if not all(type(b) in (int, float) and math.isfinite(b) for b in (low, high)):
            raise InputError(f"value range of {name!r}: low and high must be finite numbers")
        if low > high:
            raise InputError(f"value range of {name!r}: low {low} is above high {high}")
        ranges[name] = (float(low), float(high))
    return ranges


def _positive(value: object, what: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= 1 << 31:
        raise InputError(f"{what} must be a positive integer")
    return value


@dataclass(frozen=True)
class DeploymentConfig:
    """Everything about a deployment but which versions it serves (that is the RoutePlan)."""

    output: OutputTiers = field(
        default_factory=lambda: OutputTiers({"default": OutputPolicy.parse("full")})
    )
    value_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    max_batch: int | None = None
    max_body_bytes: int | None = None
    rollout: RolloutThresholds = field(default_factory=RolloutThresholds)
    upstream: UpstreamTarget | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "value_ranges", _checked_ranges(self.value_ranges))
        _positive(self.max_batch, "max_batch")
        _positive(self.max_body_bytes, "max_body_bytes")

    def limits(self, base: InferLimits) -> InferLimits:
        """``base`` with this deployment's batch and body limits, where it sets them."""
        changes: dict[str, int] = {}
        if self.max_batch is not None:
            changes["max_batch"] = self.max_batch
        if self.max_body_bytes is not None:
            changes["max_body_bytes"] = self.max_body_bytes
        return replace(base, **changes) if changes else base

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "output": self.output.to_dict(),
            "value_ranges": {k: list(v) for k, v in self.value_ranges.items()},
            "max_batch": self.max_batch,
            "max_body_bytes": self.max_body_bytes,
            "rollout": self.rollout.to_dict(),
            "upstream": (
                None
                if self.upstream is None
                else {"url": self.upstream.url, "model": self.upstream.model}
            ),
        }

    @classmethod
    def from_dict(cls, data: object) -> DeploymentConfig:
        """Read the stored form (or an API request's); InputError for anything else."""
        if not isinstance(data, Mapping):
            raise InputError("a deployment's config must be a JSON object")
        unknown = sorted(str(k)[:40] for k in data if k not in _KEYS)
        if unknown:
            raise InputError(f"a deployment's config has unknown fields {unknown}")
        if data.get("format", FORMAT) != FORMAT:
            raise InputError(f"a deployment's config must be format {FORMAT}")
        output = data.get("output") or {"default": "full"}
        if not isinstance(output, Mapping) or not all(isinstance(v, str) for v in output.values()):
            raise InputError("output must map tier names to output policies such as 'top-k=3'")
        upstream = data.get("upstream")
        if upstream is not None and (
            not isinstance(upstream, Mapping) or set(upstream) != {"url", "model"}
        ):
            raise InputError("upstream must be an object with url and model")
        rollout = data.get("rollout")
        return cls(
            output=OutputTiers.from_dict(output),
            value_ranges=_checked_ranges(data.get("value_ranges") or {}),
            max_batch=_positive(data.get("max_batch"), "max_batch"),
            max_body_bytes=_positive(data.get("max_body_bytes"), "max_body_bytes"),
            rollout=RolloutThresholds()
            if rollout is None
            else RolloutThresholds.from_dict(rollout),
            upstream=None
            if upstream is None
            else UpstreamTarget(upstream["url"], upstream["model"]),
        )
