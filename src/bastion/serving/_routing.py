"""What a deployment serves (:class:`RoutePlan`) and which versions answer a request.

A plan serves one version (``single``), a pool of which one answers each request
(``switch``, chosen at random or by weight) or an ensemble whose answers are combined
(``ensemble``, by vote or mean). A single-version plan may carry a candidate: a ``canary``
that answers a share of callers, sticky per caller, or a ``shadow`` that receives a copy of
every request and whose answers are discarded. Plans are immutable; each change of routing
(:meth:`RoutePlan.with_canary`, :meth:`~RoutePlan.promoted`, ...) returns a new plan, which
the gateway stores and audits. :class:`DeploymentRouter` makes the per-request choice.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

from bastion.errors import ConflictError, InputError

__all__ = ["MAX_MEMBERS", "Choice", "DeploymentRouter", "RoutePlan"]

#: Most versions a switch pool or an ensemble may hold.
MAX_MEMBERS = 16
FORMAT = 1
_MAX_VERSION_LENGTH = 256
_MAX_WEIGHT = 1e6
_MODES = ("single", "switch", "ensemble")
_METHODS: dict[str, tuple[str, ...]] = {
    "switch": ("random", "weighted"),
    "ensemble": ("vote", "mean"),
}
_KEYS = frozenset(
    {
        "format",
        "stable",
        "mode",
        "method",
        "weights",
        "candidate",
        "candidate_mode",
        "canary_percent",
    }
)

Mode = Literal["single", "switch", "ensemble"]
Method = Literal["vote", "mean", "random", "weighted"]
CandidateMode = Literal["canary", "shadow"]
Arm = Literal["stable", "candidate"]


def _shown(value: object) -> str:
    if not isinstance(value, str):
        return f"<{type(value).__name__}>"
    return repr(value if len(value) <= 60 else value[:60] + "...")


def _check_version(value: object, *, what: str) -> str:
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= _MAX_VERSION_LENGTH
        or not value.isprintable()
        or any(char.isspace() for char in value)
    ):
        raise InputError(
            f"{what} {_shown(value)} is not a version: give a non-empty name without spaces "
            f"of at most {_MAX_VERSION_LENGTH} characters, e.g. med/xray@1.2.0"
        )
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_percent(value: object) -> float:
    if not _is_number(value) or not math.isfinite(cast(float, value)):
        raise InputError("canary percent must be a number above 0 and below 100, e.g. 10")
    percent = float(cast(float, value))
    rounded = round(percent, 2)
    if not 0 < rounded < 100 or abs(percent * 100 - round(percent * 100)) > 1e-6:
        raise InputError(
            f"canary percent {percent!r} is out of range: give a number above 0 and below 100 "
            "with at most 2 decimals, e.g. 10 or 0.5"
        )
    return rounded


@dataclass(frozen=True)
class RoutePlan:
    """What a deployment serves. Versions are opaque strings (the gateway uses ns/model@version).

    ``stable`` holds the one version of a ``single`` plan, or the 2 to :data:`MAX_MEMBERS`
    members of a ``switch`` pool or an ``ensemble``. ``method`` is ``random`` or ``weighted``
    for a switch (``weights``, one positive number per member, only with ``weighted``) and
    ``vote`` or ``mean`` for an ensemble. ``candidate`` is a canary or shadow version of a
    single plan; ``canary_percent`` (above 0, below 100, 2 decimals) is the canary's share.
    Every field is checked when the plan is built; InputError says what is wrong.
    """

    stable: tuple[str, ...]
    mode: Mode = "single"
    method: Method | None = None
    weights: tuple[float, ...] | None = None
    candidate: str | None = None
    candidate_mode: CandidateMode | None = None
    canary_percent: float = 0.0

    def __post_init__(self) -> None:
        mode = self.mode
        if mode not in _MODES:
            raise InputError(
                f"routing mode {_shown(mode)} is unknown: use single, switch or ensemble"
            )
        stable = self.stable
        if not isinstance(stable, tuple | list) or not 0 < len(stable) <= MAX_MEMBERS:
            raise InputError(
                f"a deployment serves 1 to {MAX_MEMBERS} versions; give a list of them"
            )
        members = tuple(_check_version(v, what="version") for v in stable)
        repeated = sorted({v for v in members if members.count(v) > 1})
        if repeated:
            raise InputError(f"each version may appear once in a deployment; repeated: {repeated}")
        object.__setattr__(self, "stable", members)
        self._check_method(mode, len(members))
        self._check_candidate(mode, members)

    def _check_method(self, mode: str, count: int) -> None:
        method, weights = self.method, self.weights
        if mode == "single":
            if count != 1:
                raise InputError(
                    f"a single deployment serves exactly one version, not {count}: "
                    "use --switch or --ensemble for several"
                )
            if method is not None or weights is not None:
                raise InputError("a single deployment takes no method or weights")
            return
        if count < 2:
            raise InputError(
                f"a {mode} needs at least 2 versions; deploy one version alone instead"
            )
        allowed = _METHODS[mode]
        if method not in allowed:
            raise InputError(
                f"{mode} method {_shown(method)} is unknown: use {' or '.join(allowed)}"
            )
        if method != "weighted":
            if weights is not None:
                raise InputError("weights apply to a weighted switch only; leave them out")
            return
        if not isinstance(weights, tuple | list) or len(weights) != count:
            raise InputError(f"a weighted switch needs one weight per version ({count} here)")
        if not all(_is_number(w) and 0 < w <= _MAX_WEIGHT for w in weights):
            raise InputError(
                f"switch weights must be numbers above 0 and at most {_MAX_WEIGHT:g}, e.g. 3,1"
            )
        object.__setattr__(self, "weights", tuple(float(w) for w in weights))

    def _check_candidate(self, mode: str, members: tuple[str, ...]) -> None:
        candidate, candidate_mode = self.candidate, self.candidate_mode
        if candidate is None:
            if candidate_mode is not None or self.canary_percent != 0:
                raise InputError("a canary or shadow mode or percent needs a candidate version")
            object.__setattr__(self, "canary_percent", 0.0)
            return
        _check_version(candidate, what="candidate version")
        if mode != "single":
            raise InputError(
                f"a canary or shadow applies to single-version deployments only, not a {mode}; "
                "redeploy the new members instead"
            )
        if candidate in members:
            raise InputError(f"candidate {candidate!r} is already the stable version")
        if candidate_mode == "canary":
            object.__setattr__(self, "canary_percent", _check_percent(self.canary_percent))
        elif candidate_mode == "shadow":
            if self.canary_percent != 0:
                raise InputError("a shadow takes no canary percent; it sees every request")
            object.__setattr__(self, "canary_percent", 0.0)
        else:
            raise InputError(
                f"candidate mode {_shown(candidate_mode)} is unknown: use canary or shadow"
            )

    def versions(self) -> tuple[str, ...]:
        """Every version the plan needs loaded: the stable ones, then the candidate."""
        return self.stable if self.candidate is None else (*self.stable, self.candidate)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description that :meth:`from_dict` reads back to an equal plan."""
        return {
            "format": FORMAT,
            "mode": self.mode,
            "stable": list(self.stable),
            "method": self.method,
            "weights": None if self.weights is None else list(self.weights),
            "candidate": self.candidate,
            "candidate_mode": self.candidate_mode,
            "canary_percent": self.canary_percent,
        }

    @classmethod
    def from_dict(cls, data: object) -> RoutePlan:
        """The plan :meth:`to_dict` wrote; InputError for anything else."""
        if not isinstance(data, Mapping):
            raise InputError("a routing plan must be a JSON object")
        unknown = sorted(str(key)[:40] for key in data.keys() - _KEYS)
        if unknown:
            raise InputError(
                f"routing plan has unknown fields {unknown}; it may be from a newer Bastion"
            )
        if "format" not in data:
            raise InputError(f"routing plan has no 'format'; this Bastion reads format {FORMAT}")
        version = data["format"]
        if type(version) is not int or version != FORMAT:
            shown = version if type(version) is int and abs(version) < 1000 else _shown(version)
            raise InputError(
                f"routing plan format {shown} is not supported: this Bastion reads format {FORMAT}"
            )
        stable = data.get("stable")
        if not isinstance(stable, list):
            raise InputError("routing plan 'stable' must be a list of versions")
        weights = data.get("weights")
        if weights is not None and not isinstance(weights, list):
            raise InputError("routing plan 'weights' must be a list of numbers or null")
        fields: dict[str, Any] = {
            key: data[key]
            for key in ("mode", "method", "candidate", "candidate_mode")
            if key in data
        }
        return cls(
            stable=tuple(stable),
            weights=None if weights is None else tuple(weights),
            canary_percent=data.get("canary_percent", 0.0),
            **fields,
        )

    def _with_candidate(self, version: str, kind: CandidateMode, percent: float) -> RoutePlan:
        _check_version(version, what=f"{kind} version")
        if self.mode != "single":
            raise ConflictError(
                f"a {kind} applies to single-version deployments only; this one is a {self.mode} "
                f"of {len(self.stable)} versions: redeploy it with the new members instead"
            )
        if version in self.stable:
            raise ConflictError(f"{version!r} is already the stable version: give a new version")
        if self.candidate is not None and self.candidate != version:
            raise ConflictError(
                f"this deployment already has {self.candidate_mode} {self.candidate!r}: "
                "promote it or roll it back first (bastion rollout promote|rollback)"
            )
        return replace(self, candidate=version, candidate_mode=kind, canary_percent=percent)

    def with_canary(self, version: str, percent: float) -> RoutePlan:
        """This plan with ``version`` answering ``percent`` % of callers (a new percent for
        the same canary, or a shadow turned canary)."""
        return self._with_candidate(version, "canary", percent)

    def with_shadow(self, version: str) -> RoutePlan:
        """This plan with ``version`` receiving a copy of every request, its answers discarded."""
        return self._with_candidate(version, "shadow", 0.0)

    def promoted(self) -> RoutePlan:
        """The candidate as the one stable version; ConflictError without a candidate."""
        if self.candidate is None:
            raise ConflictError("there is no canary or shadow to promote: deploy one first")
        return RoutePlan(stable=(self.candidate,))

    def rolled_back(self) -> RoutePlan:
        """This plan without its candidate; ConflictError without a candidate."""
        if self.candidate is None:
            raise ConflictError("there is no canary or shadow to roll back")
        return replace(self, candidate=None, candidate_mode=None, canary_percent=0.0)


@dataclass(frozen=True)
class Choice:
    """Which versions answer one request, how their answers combine, and what is mirrored."""

    serve: tuple[str, ...]
    combine: Literal["vote", "mean"] | None
    shadow: str | None
    arm: Arm


_BASIS_POINTS = 10_000  # canary shares are compared in hundredths of a percent


class DeploymentRouter:
    """Chooses, per request, which of a deployment's versions answer.

    A canary is sticky: the blake2b hash of the deployment name, the candidate and the
    principal decides the arm, so one caller always meets the same version for a given
    canary, in every process. A switch pool draws from ``rng`` on every request.
    """

    def __init__(self, name: str, plan: RoutePlan) -> None:
        if not isinstance(name, str) or not name:
            raise InputError("a deployment name must be a non-empty string")
        self.name = name
        self.plan = plan
        self._stable = Choice(plan.stable, None, None, "stable")
        if plan.mode == "ensemble":
            self._stable = Choice(
                plan.stable, cast(Literal["vote", "mean"], plan.method), None, "stable"
            )
        elif plan.candidate_mode == "shadow":
            self._stable = Choice(plan.stable, None, plan.candidate, "stable")
        self._pool = tuple(Choice((v,), None, None, "stable") for v in plan.stable)
        self._cumulative: list[float] = []
        if plan.weights is not None:
            total = 0.0
            for weight in plan.weights:
                total += weight
                self._cumulative.append(total)
        self._canary: Choice | None = None
        self._threshold = 0
        self._prefix = hashlib.blake2b(digest_size=8)
        if plan.candidate_mode == "canary" and plan.candidate is not None:
            self._canary = Choice((plan.candidate,), None, None, "candidate")
            self._threshold = round(plan.canary_percent * 100)
            for part in (name, plan.candidate):
                encoded = part.encode("utf-8", "surrogatepass")
                self._prefix.update(len(encoded).to_bytes(4, "big") + encoded)

    def choose(self, principal: str, rng: random.Random) -> Choice:
        """The versions that answer ``principal``'s request now."""
        if self._canary is not None:
            hasher = self._prefix.copy()
            hasher.update(principal.encode("utf-8", "surrogatepass"))
            bucket = int.from_bytes(hasher.digest(), "big") % _BASIS_POINTS
            return self._canary if bucket < self._threshold else self._stable
        if self.plan.mode != "switch":
            return self._stable
        if self._cumulative:
            point = rng.random() * self._cumulative[-1]
            index = bisect.bisect_right(self._cumulative, point)
            return self._pool[min(index, len(self._pool) - 1)]
        return self._pool[rng.randrange(len(self._pool))]
