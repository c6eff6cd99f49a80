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
    """A one-line progress bar on stderr, only when stderr is a terminal.

    Files may report in turns (a pull fetches two at once): the line shows the file that
    reported last, and the rate is the whole transfer's since its first report.
    """

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._start: float | None = None
        self._shown = 0.0
        self._done: dict[str, int] = {}

    def __call__(self, name: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self._start is None:
            self._start = now
        self._done[name] = done
        if done < total and now - self._shown < 0.1:
            return
        self._shown = now
        rate = sum(self._done.values()) / max(now - self._start, 1e-6) / 1e6
        pct = 100 if total == 0 else done * 100 // total
        shown = name if len(name) <= 40 else "..." + name[-37:]
        sys.stderr.write(f"\r{shown:<40} {pct:3d}% {rate:8.1f} MB/s")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
