"""What the hub commands share: finding the hub and its key, and progress on stderr."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.client import Client

__all__ = ["Progress", "add_hub_options", "open_client"]


def add_hub_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hub")
    group.add_argument("--url", help="the hub (default: BASTION_URL, then bastion login)")
    group.add_argument("--ca", help="PEM CA certificate the hub's TLS certificate chains to")


def open_client(args: argparse.Namespace) -> Client:
    from bastion.client import Client

    return Client(args.url, ca=args.ca)


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._start = time.monotonic()
        self._shown = 0.0
        self._name = ""

    def __call__(self, name: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if name == self._name and done < total and now - self._shown < 0.1:
            return
        self._name, self._shown = name, now
        rate = done / max(now - self._start, 1e-6) / 1e6
        pct = 100 if total == 0 else done * 100 // total
        shown = name if len(name) <= 40 else "..." + name[-37:]
        sys.stderr.write(f"\r{shown:<40} {pct:3d}% {rate:8.1f} MB/s")
        if done >= total:
            sys.stderr.write("\n")
            self._start = time.monotonic()
        sys.stderr.flush()
