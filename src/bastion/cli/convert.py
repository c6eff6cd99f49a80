"""``bastion convert``: copy a PyTorch checkpoint's tensors into safetensors, running nothing."""

from __future__ import annotations

import argparse

from bastion.cli._output import add_json_flag, emit, note

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a PyTorch checkpoint to safetensors without unpickling it",
        description="Extract the tensors of a pickle-based PyTorch checkpoint (torch.save zip "
        "or the pre-1.6 format) into a safetensors file. The pickle is never executed: only "
        "tensor-rebuild functions are honoured, and anything else is refused (exit 2).",
    )
    p.add_argument("src", help="the checkpoint (.pt, .pth, .bin, .ckpt)")
    p.add_argument("dst", help="the safetensors file to write")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    add_json_flag(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bastion.scanning import convert

    result = convert(args.src, args.dst, force=args.force)
    skipped = f"; left out {len(result.skipped)} non-tensor entries" if result.skipped else ""
    note(
        f"bastion: wrote {len(result.tensors)} tensor(s) ({result.bytes_written} bytes) "
        f"to {result.destination}{skipped}"
    )
    if result.skipped:
        note("bastion: left out: " + ", ".join(result.skipped[:20]))
    if args.json:
        emit(args, {"ok": True, **result.to_dict()}, "")
    return 0
