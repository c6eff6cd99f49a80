"""The SDK's side of the inference gateway: deployments, rollouts, inference, records.

:class:`GatewayMixin` is one of :class:`bastion.Client`'s bases::

    with Client() as hub:
        hub.deploy("med/xray@1.2.0", name="xray")
        hub.deploy("med/xray@1.3.0", name="xray", canary=10)
        hub.promote("xray")
        answer = hub.infer("xray", {"inputs": [...]})
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from bastion.client._http import HubSession

__all__ = ["GatewayMixin"]


def _q(name: str) -> str:
    return urllib.parse.quote(name, safe="")


class GatewayMixin:
    """Deploy hub versions (or front an upstream server), change their routing, call them."""

    _session: HubSession

    def deploy(
        self,
        refs: str | Sequence[str] = (),
        *,
        name: str,
        canary: float | None = None,
        shadow: bool = False,
        ensemble: str | None = None,
        switch: str | None = None,
        weights: Sequence[float] | None = None,
        output: Mapping[str, str] | str | None = None,
        value_ranges: Mapping[str, tuple[float, float]] | None = None,
        max_batch: int | None = None,
        rollout: Mapping[str, Any] | None = None,
        upstream: str | None = None,
        upstream_model: str | None = None,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """Create or change deployment ``name``; returns it as stored (with its revision).

        ``refs``: one version (``ns/model@1.2.0`` or ``ns/model:alias``), or several with
        ``ensemble`` ("vote" or "mean") or ``switch`` ("random" or "weighted" with
        ``weights``). ``canary`` (percent of callers) or ``shadow`` adds a candidate to an
        existing deployment. ``output`` is a policy ("top-k=3,round=2") or one per tier.
        ``rollout`` sets the automatic rollback thresholds (``window_seconds``,
        ``min_requests``, ``max_error_rate``, ``max_p99_seconds``, ``max_p99_ratio``).
        ``upstream`` (with ``upstream_model`` and ``namespace``) fronts an OIP server.
        """
        versions = [refs] if isinstance(refs, str) else list(refs)
        body: dict[str, Any] = {"name": name, "versions": versions, "shadow": shadow}
        if ensemble is not None:
            body.update(mode="ensemble", method=ensemble)
        elif switch is not None:
            body.update(mode="switch", method=switch)
        if weights is not None:
            body["weights"] = list(weights)
        if canary is not None:
            body["canary"] = canary
        if output is not None:
            body["output"] = {"default": output} if isinstance(output, str) else dict(output)
        if value_ranges is not None:
            body["value_ranges"] = {k: list(v) for k, v in value_ranges.items()}
        if max_batch is not None:
            body["max_batch"] = max_batch
        if rollout is not None:
            body["rollout"] = dict(rollout)
        if upstream is not None:
            body.update(upstream=upstream, upstream_model=upstream_model, namespace=namespace)
        result: dict[str, Any] = self._session.json("POST", "/api/v1/deployments", json=body)
        return result

    def deployments(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._session.json("GET", "/api/v1/deployments")
        return result

    def deployment(self, name: str) -> dict[str, Any]:
        """One deployment: its plan, config, workers and recent revisions."""
        result: dict[str, Any] = self._session.json("GET", f"/api/v1/deployments/{_q(name)}")
        return result

    def promote(self, name: str) -> dict[str, Any]:
        """Make the candidate (canary or shadow) of ``name`` its only stable version."""
        path = f"/api/v1/deployments/{_q(name)}/promote"
        result: dict[str, Any] = self._session.json("POST", path)
        return result

    def rollback(self, name: str, reason: str = "") -> dict[str, Any]:
        """Drop the candidate of ``name``; the stable version(s) take all traffic."""
        path = f"/api/v1/deployments/{_q(name)}/rollback"
        result: dict[str, Any] = self._session.json("POST", path, json={"reason": reason})
        return result

    def undeploy(self, name: str) -> None:
        self._session.request("DELETE", f"/api/v1/deployments/{_q(name)}")

    def model_metadata(self, name: str) -> dict[str, Any]:
        """The OIP metadata of deployment ``name`` as this caller sees it."""
        result: dict[str, Any] = self._session.json("GET", f"/v2/models/{_q(name)}")
        return result

    def infer(self, name: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """Send one OIP (KServe v2) JSON inference request; returns the JSON response."""
        path = f"/v2/models/{_q(name)}/infer"
        result: dict[str, Any] = self._session.json("POST", path, json=dict(request))
        return result

    def inference_records(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        deployment: str | None = None,
    ) -> Iterator[str]:
        """The inference records, one JSON line each (for a SIEM)."""
        params = {
            k: str(v)
            for k, v in {"since": since, "until": until, "deployment": deployment}.items()
            if v is not None
        }
        text = self._session.request("GET", "/api/v1/inference-records", params=params).text
        yield from (line for line in text.splitlines() if line)
