"""A model worker: ``python -I -B -m bastion.serving._worker_main --runtime onnx ...``.

Started by :class:`bastion.serving._worker.Worker`, with the protocol of
:mod:`bastion.serving._worker_protocol` on its stdin and stdout. It moves the protocol to
descriptors of its own and points stdin and stdout at ``/dev/null``, so nothing a runtime
prints can be taken for a message; imports the runtime; locks itself down
(:mod:`bastion.serving._sandbox`); then reads the model's bytes from the LOAD frame, loads
it from memory, answers READY with the signature and the protections applied, and serves
INFER frames one at a time, in order, until its stdin closes. Its stderr is the gateway's log.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence

from bastion.errors import InputError
from bastion.serving._runtimes import (
    LoadedModel,
    RuntimeKind,
    load_model,
    prepare_runtime,
    runtime_reason,
)
from bastion.serving._sandbox import lock_down
from bastion.serving._worker_protocol import (
    READ_SIZE,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameKind,
    decode_infer,
    encode_error,
    encode_frame,
    encode_result,
)

logger = logging.getLogger("bastion.serving.worker")

_EXIT_PROTOCOL = 3


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bastion.serving._worker_main")
    parser.add_argument("--runtime", type=RuntimeKind, choices=list(RuntimeKind), required=True)
    parser.add_argument("--model-bytes", type=int, required=True)
    parser.add_argument("--memory-bytes", type=int, required=True)
    parser.add_argument("--max-frame-bytes", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def _protocol_descriptors() -> tuple[int, int]:
    """Duplicate stdin and stdout for the protocol; point fds 0 and 1 at /dev/null."""
    reading, writing = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    return reading, writing


def _frames(fd: int, decoder: FrameDecoder) -> Iterator[Frame]:
    while chunk := os.read(fd, READ_SIZE):
        yield from decoder.feed(chunk)


def _batches(fd: int, decoder: FrameDecoder) -> Iterator[list[Frame]]:
    """The frames of each read: several when the gateway had several requests at once."""
    while chunk := os.read(fd, READ_SIZE):
        if frames := decoder.feed(chunk):
            yield frames


def _send(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _answer(model: LoadedModel, frame: Frame, max_frame_bytes: int) -> bytes:
    outputs, inputs = decode_infer(frame.payload)
    try:
        answer = encode_result(frame.request_id, model.run(inputs, outputs))
        if len(answer) - 4 > max_frame_bytes:
            raise InputError(
                f"the outputs take {len(answer)} bytes, over the limit of {max_frame_bytes} "
                "bytes per answer: send smaller batches"
            )
        return answer
    except InputError as exc:
        return encode_error(frame.request_id, ErrorCode.INPUT, exc.message)
    except MemoryError:
        return encode_error(
            frame.request_id,
            ErrorCode.INPUT,
            "the inference needs more memory than the deployment allows; send smaller batches",
        )
    except Exception as exc:  # a fault of the runtime: report it, keep serving
        logger.warning("inference failed: %s: %s", type(exc).__name__, runtime_reason(exc))
        return encode_error(frame.request_id, ErrorCode.INTERNAL, runtime_reason(exc))


def _load(args: argparse.Namespace, reading: int, writing: int) -> LoadedModel | None:
    decoder = FrameDecoder(max(args.model_bytes + 64, 1024))
    frame = next(_frames(reading, decoder), None)
    if frame is None or frame.kind is not FrameKind.LOAD:
        return None
    try:
        return load_model(args.runtime, bytes(frame.payload), threads=args.threads)
    except InputError as exc:
        _send(writing, encode_error(0, ErrorCode.LOAD, exc.message))
    except MemoryError:
        text = f"loading the model needs more than the {args.memory_bytes} bytes allowed"
        _send(writing, encode_error(0, ErrorCode.LOAD, text))
    return None


def serve(argv: Sequence[str] | None = None) -> int:
    """Run a worker on this process's stdin and stdout; the exit status."""
    args = _parse(argv)
    reading, writing = _protocol_descriptors()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    prepare_runtime(args.runtime)
    protections = lock_down(memory_bytes=args.memory_bytes)
    model = _load(args, reading, writing)
    if model is None:
        return 0
    ready = {**model.signature.to_metadata("model"), "protections": list(protections)}
    _send(writing, encode_frame(FrameKind.READY, 0, [json.dumps(ready).encode()]))
    decoder = FrameDecoder(args.max_frame_bytes)
    try:
        for frames in _batches(reading, decoder):
            answers = []
            for frame in frames:
                if frame.kind is not FrameKind.INFER:
                    raise InputError(f"worker protocol: unexpected {frame.kind.name} frame")
                answers.append(_answer(model, frame, args.max_frame_bytes))
            _send(writing, b"".join(answers))  # one wake-up of the gateway for them all
    except InputError as exc:
        logger.error("%s; the worker stops", exc.message)
        return _EXIT_PROTOCOL
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(serve())
