"""The gateway's Prometheus metrics, cheap enough to record on the event loop.

:class:`GatewayMetrics` counts requests, latencies, rejections, rate-limit hits, worker
restarts, routing and rollbacks per deployment and version, and renders them in the Prometheus
text exposition format 0.0.4 from a private registry. Samples live in plain dictionaries
behind one lock and are turned into metric families only when scraped: a labelled
``prometheus_client`` child costs about 1.5 us per update, too much for a path that runs
thousands of times a second. Label values are bounded: reasons outside a fixed set become
``other``, and past ``max_pairs`` deployment/version pairs new ones are counted as ``other``,
so no caller can grow memory without limit.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from bastion.errors import BastionError

__all__ = ["LATENCY_BUCKETS", "GatewayMetrics"]

#: Upper bounds of the latency histogram, in seconds: 100 us to 10 s.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: The label value standing for anything outside the allowed set or past the cap.
OTHER = "other"
#: Longest deployment or version label kept; longer ones are counted as ``other``.
MAX_LABEL_LENGTH = 128
_PREFIX = "bastion_gateway_"


def _error_codes() -> frozenset[str]:
    codes: set[str] = set()
    stack: list[type[BastionError]] = [BastionError]
    while stack:
        cls = stack.pop()
        codes.add(cls.code)
        stack.extend(cls.__subclasses__())
    return frozenset(codes)


_LE = (*(repr(bound) for bound in LATENCY_BUCKETS), "+Inf")  # as Prometheus spells them


@dataclass(slots=True)
class _Histogram:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0


@dataclass(slots=True)
class _Served:
    histogram: _Histogram
    count: int = 0


@dataclass(slots=True)
class _Family:
    """One labelled counter or gauge: its label names and the values allowed in the last."""

    name: str
    doc: str
    labelnames: tuple[str, ...]
    allowed: frozenset[str] | None = None  # for the last label; None: no fixed label
    gauge: bool = False
    values: dict[tuple[str, ...], int] = field(default_factory=dict)
    cache: dict[tuple[object, ...], tuple[str, ...]] = field(default_factory=dict)


class GatewayMetrics:
    """The gateway's counters, gauges and latency histogram, in a private registry."""

    def __init__(self, *, max_pairs: int = 1000) -> None:
        self._max_pairs = max_pairs
        self._lock = threading.Lock()
        self._pairs: set[tuple[str, str]] = set()
        self._served: dict[tuple[str, str, int], _Served] = {}
        self._served_cells: dict[tuple[str, str, str], _Served] = {}
        self._histograms: dict[tuple[str, str], _Histogram] = {}
        by_version = ("deployment", "version")
        self._rejections = _Family(
            "rejections", "Requests refused, by error code.", ("deployment", "reason"),
            _error_codes(),
        )  # fmt: skip
        self._rate_limited = _Family(
            "rate_limited", "Requests refused by a rate limit.", ("deployment",)
        )
        self._restarts = _Family(
            "worker_restarts", "Inference workers restarted.", (*by_version, "reason"),
            frozenset({"crashed", "hung"}),
        )  # fmt: skip
        self._workers_up = _Family(
            "workers_up", "Whether a version's worker is up (1) or down (0).", by_version,
            gauge=True,
        )  # fmt: skip
        self._routed = _Family(
            "routed", "Requests routed, by arm.", (*by_version, "arm"),
            frozenset({"stable", "candidate", "shadow"}),
        )  # fmt: skip
        self._rollbacks = _Family(
            "rollbacks", "Deployments rolled back.", ("deployment", "reason"),
            frozenset({"auto", "manual", "yank"}),
        )  # fmt: skip
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(self))

    # -- recording ---------------------------------------------------------------------------

    def served(self, deployment: str, version: str, seconds: float, status: int) -> None:
        """Count one answered request and observe its latency."""
        cell = self._served.get((deployment, version, status))
        if cell is None:
            cell = self._served_cell(deployment, version, status)
        if not seconds >= 0.0:  # NaN or negative: a clock went backwards
            seconds = 0.0
        with self._lock:
            cell.count += 1
            histogram = cell.histogram
            histogram.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            histogram.total += seconds

    def rejected(self, deployment: str, reason: str) -> None:
        """Count one refused request; ``reason`` is a Bastion error code."""
        self._bump(self._rejections, deployment, None, reason)

    def rate_limited(self, deployment: str | None) -> None:
        """Count one rate-limit hit; None for a limit not tied to a deployment."""
        self._bump(self._rate_limited, deployment or "", None, None)

    def worker_restarted(self, deployment: str, version: str, reason: str) -> None:
        """Count one worker restart; ``reason`` is ``crashed`` or ``hung``."""
        self._bump(self._restarts, deployment, version, reason)

    def set_workers_up(self, deployment: str, version: str, up: bool) -> None:
        """Record whether the worker of ``deployment`` ``version`` is up."""
        self._bump(self._workers_up, deployment, version, None, set_to=int(up))

    def routed(self, deployment: str, version: str, arm: str) -> None:
        """Count one request routed to ``arm`` (``stable``, ``candidate`` or ``shadow``)."""
        self._bump(self._routed, deployment, version, arm)

    def rollback(self, deployment: str, reason: str) -> None:
        """Count one rollback; ``reason`` is ``auto``, ``manual`` or ``yank``."""
        self._bump(self._rollbacks, deployment, None, reason)

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type (text format 0.0.4)."""
        return generate_latest(self._registry), CONTENT_TYPE_PLAIN_0_0_4

    # -- label bounding ----------------------------------------------------------------------

    def _admit(self, deployment: str, version: str) -> tuple[tuple[str, str], bool]:
        """The label pair to use (caller holds the lock), and whether it is the real one."""
        pair = (deployment, version)
        if pair in self._pairs:
            return pair, True
        if len(self._pairs) < self._max_pairs and _usable(deployment) and _usable(version):
            self._pairs.add(pair)
            return pair, True
        return (OTHER, OTHER), False

    def _served_cell(self, deployment: str, version: str, status: int) -> _Served:
        code = str(status) if type(status) is int and 100 <= status <= 599 else OTHER
        with self._lock:
            pair, admitted = self._admit(deployment, version)
            labels = (*pair, code)
            cell = self._served_cells.get(labels)
            if cell is None:
                histogram = self._histograms.setdefault(pair, _Histogram())
                cell = self._served_cells[labels] = _Served(histogram)
            if admitted and code != OTHER:
                self._served[(deployment, version, status)] = cell
        return cell

    def _bump(
        self,
        family: _Family,
        deployment: str,
        version: str | None,
        last: str | None,
        *,
        set_to: int | None = None,
    ) -> None:
        raw = (deployment, version, last)
        with self._lock:
            labels = family.cache.get(raw)
            if labels is None:
                pair, admitted = self._admit(deployment, version or "")
                labels = pair if version is not None else pair[:1]
                if family.allowed is not None:
                    known = last in family.allowed
                    labels = (*labels, last if known and last is not None else OTHER)
                    admitted = admitted and known
                if admitted:
                    family.cache[raw] = labels
            if set_to is None:
                family.values[labels] = family.values.get(labels, 0) + 1
            else:
                family.values[labels] = set_to

    # -- rendering ---------------------------------------------------------------------------

    def _families(self) -> Iterator[Metric]:
        with self._lock:
            served = {labels: cell.count for labels, cell in self._served_cells.items()}
            histograms = {pair: (list(h.buckets), h.total) for pair, h in self._histograms.items()}
            others = [
                (family, dict(family.values))
                for family in (
                    self._rejections,
                    self._rate_limited,
                    self._restarts,
                    self._workers_up,
                    self._routed,
                    self._rollbacks,
                )
            ]
        requests = CounterMetricFamily(
            _PREFIX + "requests",
            "Requests answered, by HTTP status.",
            labels=("deployment", "version", "code"),
        )
        for labels, count in served.items():
            requests.add_metric(labels, count)
        yield requests
        latency = HistogramMetricFamily(
            _PREFIX + "request_duration_seconds",
            "Time to answer a request, in seconds.",
            labels=("deployment", "version"),
        )
        for pair, (buckets, total) in histograms.items():
            cumulative, running = [], 0
            for le, count in zip(_LE, buckets, strict=True):
                running += count
                cumulative.append((le, float(running)))
            latency.add_metric(pair, cumulative, total)
        yield latency
        for family, values in others:
            kind = GaugeMetricFamily if family.gauge else CounterMetricFamily
            metric = kind(_PREFIX + family.name, family.doc, labels=family.labelnames)
            for names, value in values.items():
                metric.add_metric(names, value)
            yield metric


def _usable(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_LABEL_LENGTH and value.isprintable()


class _Collector:
    """Adapts :class:`GatewayMetrics` to prometheus_client's collector protocol."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self._metrics._families()
