"""A deployment as it serves: its router, its workers (or upstream server) and its outputs.

:meth:`LiveDeployment.infer` is the gateway's hot path after authentication and policy:
validate the request against the model's inputs, choose the version(s), run them, combine
an ensemble's answers, shape the outputs for the caller's tier and encode the response.
Nothing here touches the database.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bastion.auth import PolicyResource
from bastion.errors import BastionError, ModelUnavailableError
from bastion.serving._deployment_store import DeploymentRecord
from bastion.serving._ensembles import combine
from bastion.serving._oip import InferLimits, InferRequest, parse_infer_request
from bastion.serving._oip_answer import parse_infer_answer
from bastion.serving._oip_response import encode_infer_response
from bastion.serving._output_shaping import OutputShaper
from bastion.serving._rollout_guard import Arm, RolloutGuard
from bastion.serving._routing import Choice, DeploymentRouter
from bastion.serving._tensors import ModelSignature
from bastion.serving._upstream import UpstreamClient
from bastion.serving._worker_supervisor import WorkerSupervisor

__all__ = ["Answer", "LiveDeployment", "version_label"]

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray[Any, Any]]


def version_label(ref: str) -> str:
    """``ns/model@1.2.0`` -> ``1.2.0``: what OIP calls the model version."""
    return ref.rpartition("@")[2]


@dataclass(frozen=True)
class Answer:
    """One served inference: the response, who answered, and what the record keeps."""

    body: bytes
    headers: dict[str, str]
    version: str
    arm: str
    outputs: Tensors = field(repr=False)


class LiveDeployment:
    """One deployment's serving state; replaced as a whole when the deployment changes."""

    def __init__(
        self,
        record: DeploymentRecord,
        *,
        signature: ModelSignature,
        limits: InferLimits,
        workers: Mapping[str, WorkerSupervisor] | None = None,
        upstream: UpstreamClient | None = None,
    ) -> None:
        self.record = record
        self.name = record.name
        self.signature = signature
        self.limits = record.config.limits(limits)
        self.workers = dict(workers or {})
        self.upstream = upstream
        self.resource = PolicyResource.deployment(record.namespace, record.name)
        self.router = None if record.plan is None else DeploymentRouter(record.name, record.plan)
        self.guard = (
            None
            if record.plan is None or record.plan.candidate is None
            else RolloutGuard(record.config.rollout)
        )
        self.shapers = {
            tier: OutputShaper.build(signature, policy)
            for tier, policy in record.config.output.items()
        }
        self._ranges = dict(record.config.value_ranges) or None
        #: Why the deployment cannot serve now (its versions were yanked), or None.
        self.down: str | None = None
        self._rng = random.Random()  # noqa: S311 (routing shares, not secrets)
        self._noise = np.random.default_rng()
        self._versions = {ref: version_label(ref) for ref in self.workers}

    def tier_of(self, groups: frozenset[str] | tuple[str, ...]) -> str:
        """The caller's output tier: the first of its groups that names a tier, or default."""
        for group in groups:
            if group != "default" and group in self.shapers:
                return group
        return "default"

    def metadata(self, tier: str) -> dict[str, object]:
        versions = sorted({version_label(v) for v in self.workers}) if self.workers else []
        platform = "upstream" if self.upstream is not None else "bastion"
        return self.shapers[tier].exposed.to_metadata(self.name, versions, platform)

    def ready(self) -> bool:
        if self.down is not None:
            return False
        if self.upstream is not None:
            return True
        return all(w.signature is not None and w.alive for w in self.workers.values())

    async def infer(
        self,
        principal: str,
        tier: str,
        body: bytes,
        content_type: str | None,
        headers: Mapping[str, str],
        *,
        alone: bool = False,
    ) -> Answer:
        """Serve one call; ``alone`` says no other call is on its way (see Worker.infer)."""
        if self.down is not None:
            raise ModelUnavailableError(self.down)
        shaper = self.shapers[tier]
        request = parse_infer_request(
            body, content_type, headers, shaper.exposed, self.limits, value_ranges=self._ranges
        )
        requested = [o.name for o in request.requested_outputs]
        wanted = shaper.model_outputs(requested)
        if self.upstream is not None:
            outputs = await self._upstream_infer(body, content_type, headers, request)
            version, arm = "", "stable"
        else:
            assert self.router is not None
            choice = self.router.choose(principal, self._rng)
            if choice.shadow is not None:
                self._mirror(choice.shadow, request, wanted)
            outputs = await self._run(choice, request, wanted, alone=alone)
            arm = choice.arm
            version = self._versions[choice.serve[0]] if len(choice.serve) == 1 else ""
        shaped = shaper.apply(outputs, requested, self._noise)
        binary = [o.name for o in request.requested_outputs if o.binary_data]
        encoded, response_headers = encode_infer_response(
            self.name,
            version or None,
            request.id,
            shaped,
            signature=shaper.exposed,
            binary=binary,
        )
        return Answer(encoded, response_headers, version, arm, shaped)

    async def _run(
        self, choice: Choice, request: InferRequest, wanted: tuple[str, ...], *, alone: bool
    ) -> Tensors:
        if len(choice.serve) == 1:
            version, arm = choice.serve[0], choice.arm
            return await self._timed(version, arm, request.inputs, wanted, alone=alone)
        answers = await asyncio.gather(
            *(self.workers[v].infer(request.inputs, wanted) for v in choice.serve)
        )
        assert choice.combine is not None
        return combine(choice.combine, answers)

    async def _timed(
        self,
        version: str,
        arm: str,
        inputs: Tensors,
        wanted: tuple[str, ...],
        *,
        alone: bool = False,
    ) -> Tensors:
        """Run ``version``; with a candidate in play, its outcome and latency feed the guard."""
        if self.guard is None:
            return await self.workers[version].infer(inputs, wanted, alone=alone)
        loop = asyncio.get_running_loop()
        started = loop.time()
        failed = False
        try:
            return await self.workers[version].infer(inputs, wanted, alone=alone)
        except BastionError as exc:
            failed = not exc.code.startswith("bad_")  # a caller's bad input is not a failure
            raise
        finally:
            side: Arm = "candidate" if arm == "candidate" else "stable"
            self.guard.record(side, failed=failed, seconds=loop.time() - started)

    def _mirror(self, version: str, request: InferRequest, wanted: tuple[str, ...]) -> None:
        """Send the request to the shadow version too; its answer only feeds the guard."""

        async def shadow() -> None:
            try:
                await self._timed(version, "candidate", request.inputs, wanted)
            except BastionError as exc:
                log.info("shadow %s of %s failed: %s", version, self.name, exc.code)

        task = asyncio.get_running_loop().create_task(shadow())
        _SHADOWS.add(task)
        task.add_done_callback(_SHADOWS.discard)

    async def _upstream_infer(
        self,
        body: bytes,
        content_type: str | None,
        headers: Mapping[str, str],
        request: InferRequest,
    ) -> Tensors:
        assert self.upstream is not None
        assert self.record.config.upstream is not None
        length = _header_length(headers)
        answer = await self.upstream.infer(
            self.record.config.upstream.model,
            body,
            content_type=content_type or "application/json",
            header_length=length,
            request_id=request.id,
        )
        parsed = parse_infer_answer(
            answer.body, answer.content_type, answer.header_length, self.signature
        )
        return parsed.outputs


#: Shadow requests in flight (kept referenced until done).
_SHADOWS: set[asyncio.Task[None]] = set()


def _header_length(headers: Mapping[str, str]) -> int | None:
    for key, value in headers.items():
        if key.lower() == "inference-header-content-length" and value.isdigit():
            return int(value)
    return None
