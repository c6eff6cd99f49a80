"""The inference gateway's service: deployments from the hub (or an upstream server) kept
serving, changed by command or by themselves (automatic rollback, yanks), every change
stored as a revision and audited.

Changes are made in this order: start and verify the new workers, store the new revision,
switch the routing, then stop the workers no longer needed. A change that fails to load
leaves the deployment serving as it was.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from bastion.errors import (
    BastionError,
    ConflictError,
    InputError,
    ModelUnavailableError,
    NotFoundError,
)
from bastion.serving._deployment_config import DeploymentConfig
from bastion.serving._deployment_store import DeploymentRecord, DeploymentStore
from bastion.serving._ensembles import check_ensemble
from bastion.serving._live import LiveDeployment
from bastion.serving._metrics import GatewayMetrics
from bastion.serving._model_source import HubModelSource
from bastion.serving._oip import InferLimits
from bastion.serving._routing import RoutePlan
from bastion.serving._runtimes import RuntimeKind
from bastion.serving._tensors import ModelSignature
from bastion.serving._upstream import UpstreamClient
from bastion.serving._worker import WorkerLimits
from bastion.serving._worker_supervisor import WorkerSupervisor

__all__ = ["SYSTEM_ACTOR", "ChangeRecorder", "Gateway", "GatewaySettings"]

log = logging.getLogger(__name__)

#: Records a change the gateway made on its own (automatic rollback, yank): the audit log.
ChangeRecorder = Callable[[str, str, dict[str, Any]], None]
#: The actor of changes the gateway makes itself.
SYSTEM_ACTOR = "system:gateway"


@dataclass(frozen=True)
class GatewaySettings:
    limits: InferLimits = field(default_factory=InferLimits)
    worker: WorkerLimits = field(default_factory=WorkerLimits)
    #: Seconds between checks of the candidates' rollout guards.
    guard_seconds: float = 1.0


class Gateway:
    """Owns every live deployment of this server process."""

    def __init__(
        self,
        store: DeploymentStore,
        source: HubModelSource,
        metrics: GatewayMetrics,
        *,
        settings: GatewaySettings | None = None,
        record_change: ChangeRecorder | None = None,
    ) -> None:
        self.store = store
        self.source = source
        self.metrics = metrics
        self.settings = settings or GatewaySettings()
        self._record_change = record_change
        self.live: dict[str, LiveDeployment] = {}
        self._lock = asyncio.Lock()
        self._guard_task: asyncio.Task[None] | None = None

    # lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Bring up every stored deployment (each verified); one that fails is logged, down."""
        records = await anyio.to_thread.run_sync(self.store.all)
        for record in records:
            try:
                self.live[record.name] = await self._bring_up(record, reuse={})
            except BastionError as exc:
                log.error("deployment %s cannot start: %s", record.name, exc.message)
                if record.plan is not None:
                    await self._after_yank(record, str(exc.message))
        self._guard_task = asyncio.get_running_loop().create_task(self._watch_guards())

    async def stop(self) -> None:
        if self._guard_task is not None:
            self._guard_task.cancel()
        for live in list(self.live.values()):
            await self._shut(live, keep=())
        self.live.clear()

    def deployment(self, name: str) -> LiveDeployment:
        live = self.live.get(name)
        if live is None:
            raise NotFoundError(f"no deployment {name!r} is served here")
        return live

    # changes ---------------------------------------------------------------------

    async def apply(
        self,
        name: str,
        namespace: str,
        plan: RoutePlan | None,
        config: DeploymentConfig,
        *,
        actor: str,
        change: str,
        reason: str = "",
        expect_revision: int | None,
    ) -> DeploymentRecord:
        """Serve ``plan`` under ``name`` (new or changed), stored as a new revision."""
        async with self._lock:
            old = self.live.get(name)
            # Workers come up (and the config is checked against them) before anything is
            # stored; the stored record replaces the draft once saved.
            draft = DeploymentRecord.draft(name, namespace, plan, config)
            reuse = old.workers if old is not None else {}
            live = await self._bring_up(draft, reuse=reuse)
            try:
                record = await anyio.to_thread.run_sync(
                    lambda: self.store.save(
                        name,
                        namespace,
                        plan,
                        config,
                        actor=actor,
                        change=change,
                        reason=reason,
                        expect_revision=expect_revision,
                    )
                )
            except BaseException:
                await self._shut(live, keep=reuse.values())
                raise
            live.record = record
            self.live[name] = live
            if old is not None:
                await self._shut(old, keep=live.workers.values())
            self._note(live)
            return record

    async def remove(self, name: str) -> None:
        async with self._lock:
            await anyio.to_thread.run_sync(lambda: self.store.delete(name))
            live = self.live.pop(name, None)
            if live is not None:
                await self._shut(live, keep=())

    async def rollback(
        self, name: str, *, actor: str, reason: str, change: str
    ) -> DeploymentRecord:
        """Drop the candidate (canary or shadow) of ``name``."""
        record = self.deployment(name).record
        if record.plan is None:
            raise ConflictError(f"{name} fronts an upstream server; there is nothing to roll back")
        plan = record.plan.rolled_back()
        done = await self.apply(
            name, record.namespace, plan, record.config, actor=actor, change=change,
            reason=reason, expect_revision=record.revision,
        )  # fmt: skip
        self.metrics.rollback(name, "auto" if change == "auto-rollback" else "manual")
        return done

    async def promote(self, name: str, *, actor: str) -> DeploymentRecord:
        record = self.deployment(name).record
        if record.plan is None:
            raise ConflictError(f"{name} fronts an upstream server; there is nothing to promote")
        return await self.apply(
            name, record.namespace, record.plan.promoted(), record.config, actor=actor,
            change="promote", expect_revision=record.revision,
        )  # fmt: skip

    async def version_yanked(self, ref: str) -> list[str]:
        """Roll back every deployment serving ``ref``; returns their names."""
        hit = [
            live.record
            for live in self.live.values()
            if live.record.plan is not None and ref in live.record.plan.versions()
        ]
        for record in hit:
            await self._after_yank(record, f"{ref} was yanked")
        return [r.name for r in hit]

    # internals -------------------------------------------------------------------

    async def _after_yank(self, record: DeploymentRecord, why: str) -> None:
        """Return to the last revision whose versions can all still be served."""
        plan = record.plan
        assert plan is not None
        try:
            if plan.candidate is not None and self._servable_now([plan.candidate]) is False:
                target: RoutePlan | None = plan.rolled_back()
            else:
                target = await self._last_good(record.name, plan)
            if target is None:
                raise ModelUnavailableError(
                    f"deployment {record.name} has no servable version left ({why}); "
                    "deploy another version"
                )
            await self.apply(
                record.name, record.namespace, target, record.config, actor=SYSTEM_ACTOR,
                change="yank-rollback", reason=why, expect_revision=record.revision,
            )  # fmt: skip
            self.metrics.rollback(record.name, "yank")
            await self._changed(
                record.name, "deployment.rollback", {"reason": why, "cause": "yank"}
            )
        except BastionError as exc:
            live = self.live.get(record.name)
            if live is not None:
                live.down = exc.message
                await self._shut(live, keep=())
            log.error("deployment %s is down: %s", record.name, exc.message)
            await self._changed(record.name, "deployment.down", {"reason": exc.message})

    def _servable_now(self, refs: Iterable[str]) -> bool:
        try:
            for ref in refs:
                self.source.resolve(ref)
        except BastionError:
            return False
        return True

    async def _last_good(self, name: str, current: RoutePlan) -> RoutePlan | None:
        revisions = await anyio.to_thread.run_sync(lambda: self.store.revisions(name))
        for revision in revisions:
            if not revision["plan"]:
                continue
            plan = RoutePlan.from_dict(revision["plan"])
            if plan.candidate is not None:
                plan = plan.rolled_back()
            ok = await anyio.to_thread.run_sync(self._servable_now, plan.versions())
            if ok and plan != current:
                return plan
        return None

    async def _bring_up(
        self, record: DeploymentRecord, *, reuse: Mapping[str, WorkerSupervisor]
    ) -> LiveDeployment:
        if record.plan is None:
            return await self._bring_up_upstream(record)
        workers: dict[str, WorkerSupervisor] = {}
        try:
            for ref in record.plan.versions():
                worker = reuse.get(ref)
                if worker is None:
                    worker = self._supervisor(record.name, ref)
                    await worker.start()
                workers[ref] = worker
            signature = _one_signature(record.plan, workers)
            if record.plan.mode == "ensemble":
                assert record.plan.method in ("vote", "mean")
                check_ensemble(
                    record.plan.method,
                    {s.name: s.datatype.value for s in signature.outputs},
                )
            return LiveDeployment(
                record, signature=signature, limits=self.settings.limits, workers=workers
            )
        except BaseException:
            await _stop_all(w for ref, w in workers.items() if ref not in reuse)
            raise

    async def _bring_up_upstream(self, record: DeploymentRecord) -> LiveDeployment:
        target = record.config.upstream
        assert target is not None
        client = UpstreamClient(target.url)
        await client.start()
        try:
            signature = await client.model_metadata(target.model)
        except BaseException:
            await client.close()
            raise
        return LiveDeployment(
            record, signature=signature, limits=self.settings.limits, upstream=client
        )

    def _supervisor(self, deployment: str, ref: str) -> WorkerSupervisor:
        version = ref.rpartition("@")[2]

        async def load() -> tuple[RuntimeKind, bytes]:
            model = await anyio.to_thread.run_sync(lambda: self.source.load(ref))
            log.info("verified %s (%s) for %s", ref, model.root_digest, deployment)
            return model.runtime, model.model

        def restarted(reason: str) -> None:
            self.metrics.worker_restarted(deployment, version, reason)
            log.warning("the worker of %s (%s) %s; restarting it", deployment, ref, reason)

        return WorkerSupervisor(
            label=f"{deployment}:{ref}", load=load, limits=self.settings.worker,
            on_restart=restarted,
        )  # fmt: skip

    async def _shut(self, live: LiveDeployment, *, keep: Iterable[WorkerSupervisor]) -> None:
        kept = {id(w) for w in keep}
        await _stop_all(w for w in live.workers.values() if id(w) not in kept)
        if live.upstream is not None and not kept:
            await live.upstream.close()

    def _note(self, live: LiveDeployment) -> None:
        for ref in live.workers:
            self.metrics.set_workers_up(live.name, ref.rpartition("@")[2], True)

    async def _changed(self, name: str, action: str, details: dict[str, Any]) -> None:
        record = self._record_change
        if record is None:
            return
        try:
            await anyio.to_thread.run_sync(record, action, f"deployment:{name}", details)
        except Exception:
            log.exception("could not record the change of deployment %s in the audit log", name)

    async def _watch_guards(self) -> None:
        """Roll a candidate back on its own when its guard says it is failing."""
        while True:
            await asyncio.sleep(self.settings.guard_seconds)
            for live in list(self.live.values()):
                verdict = live.guard.verdict() if live.guard is not None else None
                if verdict is None:
                    continue
                try:
                    await self.rollback(
                        live.name, actor=SYSTEM_ACTOR, reason=verdict, change="auto-rollback"
                    )
                    await self._changed(
                        live.name, "deployment.rollback", {"reason": verdict, "cause": "auto"}
                    )
                    log.warning("rolled %s back automatically: %s", live.name, verdict)
                except BastionError as exc:
                    log.error("could not roll %s back: %s", live.name, exc.message)


def _one_signature(plan: RoutePlan, workers: Mapping[str, WorkerSupervisor]) -> ModelSignature:
    first = workers[plan.stable[0]].signature
    for ref in plan.versions():
        if workers[ref].signature != first:
            raise InputError(
                f"{ref} does not declare the same inputs and outputs as {plan.stable[0]}; "
                "every version a deployment serves must have one signature"
            )
    return first


async def _stop_all(workers: Iterable[WorkerSupervisor]) -> None:
    for worker in list(workers):
        try:
            await worker.stop()
        except Exception:
            log.exception("could not stop a worker cleanly")
