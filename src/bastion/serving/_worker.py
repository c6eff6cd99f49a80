"""The gateway's side of model workers: one sandboxed process per deployed model version.

A :class:`Worker` starts ``python -I -B -m bastion.serving._worker_main`` with a minimal
environment, an empty private working directory (removed when it exits), and the protocol of
:mod:`bastion.serving._worker_protocol` on its stdin and stdout; its stderr lines are logged
as warnings. The model's bytes go down the pipe: the worker never has a path to a model
file. Requests are pipelined and answered in order: the frames asked in one turn of the
event loop go down in one write, so that under concurrent load the worker wakes once for
many (it answers all it has read in one write too). A worker that exits, breaks the
protocol or does not answer within ``infer_seconds`` is killed, and every caller in flight
gets :class:`ModelUnavailableError`. :class:`~bastion.serving._worker_supervisor.WorkerSupervisor`
keeps one worker serving. Everything runs on the event loop, never blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from subprocess import PIPE
from typing import Any, cast

import numpy as np

from bastion.errors import (
    InputError,
    InternalError,
    ModelUnavailableError,
    PayloadTooLargeError,
    UsageError,
)
from bastion.serving._runtimes import RuntimeKind
from bastion.serving._tensors import ModelSignature
from bastion.serving._worker_protocol import (
    READ_SIZE,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameKind,
    decode_error,
    decode_tensors,
    encode_frame,
    encode_infer,
)

__all__ = ["Worker", "WorkerLimits"]

logger = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray[Any, Any]]
#: Lines of a worker's stderr logged, and the longest line logged, in characters.
STDERR_LINES = 1000
STDERR_LINE_CHARS = 2000
#: Seconds a stopping worker gets to exit after its stdin closes, before it is killed.
STOP_SECONDS = 2.0
#: Seconds to wait for a dead worker's stdout to close before giving up on it.
_EXIT_GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class WorkerLimits:
    """Bounds on one model worker."""

    memory_bytes: int = 2 << 30  # the worker's address space (RLIMIT_AS)
    infer_seconds: float = 5.0  # one inference longer than this: hung, killed, restarted
    start_seconds: float = 60.0  # loading longer than this: a failed start
    max_frame_bytes: int = 64 << 20  # the largest message either way
    threads: int = 1  # ONNX Runtime intra-op threads (and OMP_NUM_THREADS)

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            kinds = (int, float) if limit.name.endswith("_seconds") else (int,)
            if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
                raise UsageError(f"WorkerLimits.{limit.name} must be a positive {limit.type}")


class _Pipes(asyncio.SubprocessProtocol):
    """The worker's stdin and stderr, and its exit; its stdout is read by the Worker itself."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._worker._stderr(data)

    def process_exited(self) -> None:
        self._worker._exited()

    def connection_lost(self, exc: Exception | None) -> None:
        self._worker._finished()


class Worker:
    """One model worker process: start it, send it inferences, stop it.

    ``on_down(reason)``, if given, is called on the event loop the moment the worker is
    marked down (before any caller in flight sees its error).
    """

    def __init__(
        self,
        *,
        label: str,
        runtime: RuntimeKind,
        model: bytes,
        limits: WorkerLimits,
        on_down: Callable[[str], None] | None = None,
    ) -> None:
        self.label = label
        self._on_down = on_down
        self.runtime = RuntimeKind(runtime)
        self.limits = limits
        self.protections: tuple[str, ...] = ()
        self.signature: ModelSignature | None = None
        self._model = model
        self._decoder = FrameDecoder(limits.max_frame_bytes)
        self._pending: deque[tuple[int, asyncio.Future[Tensors], tuple[str, ...]]] = deque()
        self._next_id = 1
        self._state = "new"  # new, starting, ready, stopping, down
        self._reason = ""
        self._head_since = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._stderr_buffer = bytearray()
        self._stderr_lines = 0
        self._tmpdir = ""
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._outbox: list[bytes] = []  # frames asked in this turn of the loop, not yet written
        self._answers = -1  # the read end of the worker's stdout, while open

    @property
    def alive(self) -> bool:
        """Whether the worker has loaded its model and is serving."""
        return self._state == "ready"

    @property
    def pid(self) -> int | None:
        """The worker's process id, once started."""
        return None if self._transport is None else self._transport.get_pid()

    def _command(self) -> list[str]:
        return [
            *(sys.executable, "-I", "-B", "-m", "bastion.serving._worker_main"),
            *("--runtime", self.runtime.value, "--model-bytes", str(len(self._model))),
            *("--memory-bytes", str(self.limits.memory_bytes)),
            *("--max-frame-bytes", str(self.limits.max_frame_bytes)),
            *("--threads", str(self.limits.threads)),
        ]

    async def start(self) -> ModelSignature:
        """Spawn the worker, send it the model and wait until it has loaded it.

        Raises InputError with the runtime's reason if the model does not load, and
        ModelUnavailableError if the worker dies or takes over ``start_seconds``.
        """
        if self._state != "new":
            raise UsageError("a Worker starts once; create a new one to start again")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._ready: asyncio.Future[ModelSignature] = loop.create_future()
        self._down: asyncio.Future[str] = loop.create_future()
        self._done: asyncio.Future[None] = loop.create_future()
        self._state = "starting"
        self._tmpdir = tempfile.mkdtemp(prefix="bastion-worker-")  # its working directory
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        env["OMP_NUM_THREADS"] = str(self.limits.threads)
        answers, stdout = os.pipe()
        try:
            os.set_blocking(answers, False)
            transport, _ = await loop.subprocess_exec(
                lambda: _Pipes(self),
                *self._command(),
                stdin=PIPE,
                stdout=stdout,
                stderr=PIPE,
                env=env,
                cwd=self._tmpdir,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            os.close(answers)
            self._state = "down"
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            raise ModelUnavailableError(
                f"{self.label}: cannot start a model worker: {exc.strerror or exc}"
            ) from exc
        finally:
            os.close(stdout)  # the worker's copy is its own: its exit closes the pipe
        self._answers = answers
        loop.add_reader(answers, self._read_answers)
        self._transport = transport
        if self._done.done():  # it died before the transport was handed over
            transport.close()
        self._stdin = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))
        try:
            self._stdin.write(encode_frame(FrameKind.LOAD, 0, [self._model]))
            self._model = b""
            return await asyncio.wait_for(asyncio.shield(self._ready), self.limits.start_seconds)
        except TimeoutError:
            self._fail("start-timeout")
            await self.stop()
            raise ModelUnavailableError(
                f"{self.label}: the model worker did not load the model within "
                f"{self.limits.start_seconds:g} s; raise the start limit or deploy a smaller model"
            ) from None
        except BaseException:
            await self.stop()
            raise

    async def infer(
        self,
        inputs: Mapping[str, np.ndarray[Any, Any]],
        outputs: Sequence[str],
        *,
        alone: bool = False,
    ) -> Tensors:
        """The named ``outputs`` for ``inputs`` (read-only arrays).

        ``alone`` says that no other call is on its way: the frame is written now rather
        than at the end of this turn of the event loop, when it could have shared the write
        with the frames of other calls. If the worker answers while that write wakes it,
        as it mostly does on a shared core, no turn of the loop is waited for at all.

        Raises ModelUnavailableError if the worker is down, dies or hangs meanwhile, and
        InputError when the runtime refuses the input.
        """
        if self._state != "ready":
            raise ModelUnavailableError(
                f"{self.label}: the model worker is not running; retry in a moment"
            )
        names = tuple(outputs)
        if not names:
            raise UsageError("Worker.infer needs the names of the outputs wanted")
        request_id = self._next_id
        self._next_id += 1
        frame = encode_infer(request_id, inputs, names)
        if len(frame) - 4 > self.limits.max_frame_bytes:
            raise PayloadTooLargeError(
                f"the inputs take {len(frame)} bytes; a deployment accepts at most "
                f"{self.limits.max_frame_bytes} bytes per request: send smaller batches"
            )
        future: asyncio.Future[Tensors] = self._loop.create_future()
        if not self._pending:
            self._head_since = self._loop.time()
            if self._watchdog is None:
                self._arm_watchdog()
        self._pending.append((request_id, future, names))
        if alone and len(self._pending) == 1 and not self._outbox:
            self._outbox.append(frame)
            self._flush()
        else:
            if not self._outbox:
                self._loop.call_soon(self._flush)
            self._outbox.append(frame)
        return await future

    def _flush(self) -> None:
        frames, self._outbox = self._outbox, []
        if self._state == "ready" and self._stdin is not None and not self._stdin.is_closing():
            self._stdin.write(b"".join(frames))
            # On a busy core the worker often runs, and answers, while the write wakes it:
            # its answers are taken now rather than after another turn of the event loop.
            self._read_answers()

    async def wait(self) -> str:
        """Wait until the worker is down: why (``crashed``, ``hung``, ``stopped``, ...)."""
        return await asyncio.shield(self._down)

    async def stop(self) -> None:
        """Stop the worker: close its stdin, kill it if it lingers, remove its directory."""
        if self._state == "new":
            return
        if self._state != "down":
            self._state = "stopping"
            self._fail("stopped")
        if self._stdin is not None and not self._stdin.is_closing():
            self._stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._done), STOP_SECONDS)
        except TimeoutError:
            self._kill()
            await asyncio.shield(self._done)

    # Events from the pipes and the process, on the event loop.

    def _read_answers(self) -> None:
        """Take what the worker has written to its stdout, without waiting for more."""
        if self._answers < 0:
            return
        try:
            data = os.read(self._answers, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            self._received(data)
            return
        self._close_answers()
        self._fail("crashed")

    def _close_answers(self) -> None:
        if self._answers >= 0:
            self._loop.remove_reader(self._answers)
            os.close(self._answers)
            self._answers = -1

    def _arm_watchdog(self) -> None:
        deadline = self._head_since + self.limits.infer_seconds
        self._watchdog = self._loop.call_at(deadline, self._check_hung)

    def _check_hung(self) -> None:
        self._watchdog = None
        if self._state != "ready" or not self._pending:
            return
        if self._loop.time() >= self._head_since + self.limits.infer_seconds:
            logger.error(
                "model worker %s (pid %s) did not answer within %g s; killing it",
                self.label,
                self.pid,
                self.limits.infer_seconds,
            )
            self._fail("hung")
        else:
            self._arm_watchdog()

    def _kill(self) -> None:
        transport = self._transport
        if transport is not None and transport.get_returncode() is None:
            with contextlib.suppress(ProcessLookupError):
                transport.kill()

    def _unavailable(self, reason: str) -> ModelUnavailableError:
        what = {
            "hung": f"did not answer within {self.limits.infer_seconds:g} s and was stopped",
            "stopped": "was stopped",
            "start-timeout": "took too long to load the model",
        }.get(reason, "stopped unexpectedly")
        return ModelUnavailableError(
            f"{self.label}: the model worker {what}; the request was not served, retry in a moment"
        )

    def _fail(self, reason: str) -> None:
        """Mark the worker down for ``reason``: kill it, fail every caller in flight."""
        if self._state == "down":
            return
        stopping = self._state == "stopping"
        self._state = "down"
        self._reason = "stopped" if stopping else reason
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if reason != "stopped":
            self._kill()
        error = self._unavailable(self._reason)
        if not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # retrieved here too: start() may be gone
        while self._pending:
            _, future, _ = self._pending.popleft()
            if not future.done():
                future.set_exception(error)
        if not self._down.done():
            self._down.set_result(self._reason)
        if self._on_down is not None:
            self._on_down(self._reason)

    def _exited(self) -> None:
        transport = self._transport
        code = None if transport is None else transport.get_returncode()
        if self._state != "stopping" and self._reason != "stopped":
            logger.warning("model worker %s exited with status %s", self.label, code)
        self._loop.call_later(_EXIT_GRACE_SECONDS, self._fail, "crashed")

    def _finished(self) -> None:
        self._close_answers()
        self._fail("crashed")
        if self._stderr_buffer:
            self._log_line(bytes(self._stderr_buffer))
            self._stderr_buffer.clear()
        if self._transport is not None:
            self._transport.close()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
        if not self._done.done():
            self._done.set_result(None)

    def _received(self, data: bytes) -> None:
        try:
            frames = self._decoder.feed(data)
        except InputError as exc:
            logger.error("model worker %s broke the protocol: %s", self.label, exc.message)
            self._fail("protocol")
            return
        for frame in frames:
            if self._state == "starting":
                self._started(frame)
            elif self._state == "ready":
                self._answered(frame)

    def _started(self, frame: Frame) -> None:
        try:
            if frame.kind is FrameKind.ERROR:
                code, text = decode_error(frame.payload)
                if code is ErrorCode.LOAD:
                    self._ready.set_exception(InputError(f"{self.label}: {text}"))
                    self._state = "stopping"  # the worker exits by itself
                    return
            elif frame.kind is FrameKind.READY:
                ready = json.loads(bytes(frame.payload))
                signature = ModelSignature.from_dict(ready)
                self.protections = tuple(str(item) for item in ready.get("protections", ()))
                self._state = "ready"
                self.signature = signature
                self._ready.set_result(signature)
                return
        except (ValueError, AttributeError, InputError) as exc:
            logger.error("model worker %s sent an unreadable answer to LOAD: %s", self.label, exc)
        self._fail("protocol")

    def _answered(self, frame: Frame) -> None:
        if not self._pending or self._pending[0][0] != frame.request_id:
            logger.error("model worker %s answered a request not asked", self.label)
            self._fail("protocol")
            return
        _, future, names = self._pending.popleft()
        if self._pending:
            self._head_since = self._loop.time()
        if future.done():  # the caller gave up
            return
        try:
            if frame.kind is FrameKind.RESULT:
                outputs = decode_tensors(frame.payload)
                if outputs.keys() != set(names):
                    raise InputError("worker protocol: the outputs answered are not those asked")
                future.set_result(outputs)
                return
            if frame.kind is FrameKind.ERROR:
                code, text = decode_error(frame.payload)
                error_type = InputError if code is ErrorCode.INPUT else InternalError
                future.set_exception(error_type(f"{self.label}: {text}"))
                return
        except InputError as exc:
            logger.error("model worker %s broke the protocol: %s", self.label, exc.message)
        self._pending.appendleft((frame.request_id, future, names))
        self._fail("protocol")

    def _stderr(self, data: bytes) -> None:
        self._stderr_buffer += data
        *lines, rest = self._stderr_buffer.split(b"\n")
        if len(rest) > STDERR_LINE_CHARS:
            lines.append(rest)
            rest = bytearray()
        self._stderr_buffer = bytearray(rest)
        for line in lines:
            self._log_line(bytes(line))

    def _log_line(self, line: bytes) -> None:
        self._stderr_lines += 1
        if self._stderr_lines < STDERR_LINES:
            text = line.decode("utf-8", errors="replace").rstrip()[:STDERR_LINE_CHARS]
            logger.warning("model worker %s: %s", self.label, text)
        elif self._stderr_lines == STDERR_LINES:
            logger.warning("model worker %s: further output is not logged", self.label)
