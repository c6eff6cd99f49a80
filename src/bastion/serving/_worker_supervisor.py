"""Keeping a deployed version's worker serving: restart on death, verify on every load.

:class:`WorkerSupervisor` owns one :class:`~bastion.serving._worker.Worker` at a time; when it
dies or hangs, the supervisor calls ``load`` again (the gateway re-reads and re-verifies the
model there) and starts a new one, with backoff, while callers get ModelUnavailableError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bastion.errors import (
    ModelUnavailableError,
    UsageError,
)
from bastion.serving._runtimes import RuntimeKind
from bastion.serving._tensors import ModelSignature
from bastion.serving._worker import Tensors, Worker, WorkerLimits

__all__ = ["WorkerSupervisor", "exponential_backoff"]

logger = logging.getLogger(__name__)


def exponential_backoff(attempt: int) -> float:
    """Seconds to wait before restart attempt ``attempt`` (1, 2, ...): 0.1 s doubling to 10 s."""
    return float(min(10.0, 0.1 * 2 ** min(attempt - 1, 10)))


class WorkerSupervisor:
    """Keeps one deployment version's worker serving, restarting it when it dies or hangs.

    ``load`` is called for every start and restart: it returns the runtime and the model's
    bytes (re-read and re-verified). A restart whose ``load`` or start fails is retried after
    ``backoff(attempt)`` seconds; meanwhile :meth:`infer` raises ModelUnavailableError.
    ``on_restart(reason)`` is called once per death (``crashed``, ``hung``, ``protocol``).
    """

    def __init__(
        self,
        *,
        label: str,
        load: Callable[[], Awaitable[tuple[RuntimeKind, bytes]]],
        limits: WorkerLimits,
        on_restart: Callable[[str], None] | None = None,
        backoff: Callable[[int], float] = exponential_backoff,
    ) -> None:
        self.label = label
        self.limits = limits
        self.restarts = 0
        self._load = load
        self._on_restart = on_restart
        self._backoff = backoff
        self._worker: Worker | None = None
        self._signature: ModelSignature | None = None
        self._watch: asyncio.Task[None] | None = None
        self._serving = asyncio.Event()
        self._stopping = False

    @property
    def signature(self) -> ModelSignature:
        """The model's signature, read by the first start."""
        if self._signature is None:
            raise UsageError("the supervisor has not started: await start() first")
        return self._signature

    @property
    def alive(self) -> bool:
        """Whether a worker is up and serving now."""
        return self._worker is not None and self._worker.alive

    @property
    def pid(self) -> int | None:
        """The current worker's process id, or None while there is none."""
        return None if self._worker is None else self._worker.pid

    @property
    def protections(self) -> tuple[str, ...]:
        """The protections the current worker reported."""
        return () if self._worker is None else self._worker.protections

    async def _launch(self) -> tuple[Worker, ModelSignature]:
        runtime, model = await self._load()
        worker = Worker(
            label=self.label,
            runtime=runtime,
            model=model,
            limits=self.limits,
            on_down=lambda reason: self._serving.clear(),
        )
        signature = await worker.start()
        return worker, signature

    async def start(self) -> ModelSignature:
        """Load and start the first worker; raises what ``load`` or the start raised."""
        if self._watch is not None or self._stopping:
            raise UsageError("a WorkerSupervisor starts once")
        worker, signature = await self._launch()
        logger.info("model worker %s up, protections: %s", self.label, worker.protections)
        self._worker, self._signature = worker, signature
        self._serving.set()
        self._watch = asyncio.get_running_loop().create_task(self._keep_serving())
        return signature

    async def wait_serving(self) -> None:
        """Wait until a worker is up (returns at once when one is)."""
        await self._serving.wait()

    async def infer(
        self,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        outputs: Sequence[str],
        *,
        alone: bool = False,
    ) -> Tensors:
        """As :meth:`Worker.infer`; ModelUnavailableError while the worker is down."""
        worker = self._worker
        if worker is None or not worker.alive:
            raise ModelUnavailableError(
                f"{self.label}: the model worker is restarting; retry in a moment"
            )
        return await worker.infer(inputs, outputs, alone=alone)

    async def _keep_serving(self) -> None:
        try:
            await self._restart_when_down()
        except Exception:  # a defect here must not leave the deployment down unnoticed
            logger.exception("the supervisor of model worker %s failed", self.label)
            raise

    async def _restart_when_down(self) -> None:
        while self._worker is not None:
            reason = await self._worker.wait()
            if self._stopping:
                return
            self._serving.clear()
            self.restarts += 1
            logger.warning("model worker %s went down (%s); restarting it", self.label, reason)
            if self._on_restart is not None:
                try:
                    self._on_restart(reason)
                except Exception:
                    logger.exception("on_restart of %s failed", self.label)
            dead, self._worker = self._worker, None
            await dead.stop()
            self._worker = await self._restart()
            self._serving.set()

    async def _restart(self) -> Worker:
        attempt = 0
        while True:
            try:
                worker, signature = await self._launch()
            except Exception as exc:
                attempt += 1
                delay = self._backoff(attempt)
                logger.warning(
                    "model worker %s did not restart (%s); retrying in %.1f s",
                    self.label,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            if signature == self._signature:
                return worker
            await worker.stop()
            attempt += 1
            logger.error(
                "model worker %s restarted with a different signature; retrying", self.label
            )
            await asyncio.sleep(self._backoff(attempt))

    async def stop(self) -> None:
        """Stop serving: no more restarts, the worker stopped."""
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._worker is not None:
            await self._worker.stop()
        self._serving.clear()
