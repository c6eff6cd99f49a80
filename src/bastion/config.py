"""Settings read from the environment and the terminal: only the faces use this.

The library takes arguments; the command line (and later the server) turn
environment variables, files and prompts into those arguments here.

* ``BASTION_KEY_PASSPHRASE``: passphrase for encrypted private keys, when no
  ``--passphrase-file`` is given. A passphrase is never taken as a flag value.
* ``BASTION_CACHE``: path of the digest cache used by ``--cache``
  (default ``$XDG_CACHE_HOME/bastion/digests.sqlite``, or ``~/.cache/...``).
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from bastion._files import read_input
from bastion.errors import InputError, UsageError

__all__ = ["PASSPHRASE_ENV", "default_cache_path", "read_passphrase"]

PASSPHRASE_ENV = "BASTION_KEY_PASSPHRASE"  # noqa: S105 (a variable name, not a secret)
CACHE_ENV = "BASTION_CACHE"
_MAX_PASSPHRASE_FILE = 4096


def read_passphrase(
    passphrase_file: str | None, *, confirm: bool = False, prompt: str = "Passphrase: "
) -> bytes | None:
    """The passphrase from a file, the environment, or a terminal prompt, in that order.

    None when there is no source (no file, no variable, no terminal).
    """
    if passphrase_file is not None:
        data = read_input(passphrase_file, "passphrase file", limit=_MAX_PASSPHRASE_FILE)
        value = data.rstrip(b"\r\n")
        if not value:
            raise InputError(f"passphrase file {passphrase_file!r} is empty")
        return value
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env.encode()
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if confirm and getpass.getpass("Repeat passphrase: ") != first:
            raise UsageError("the passphrases do not match")
        return first.encode() or None
    return None


def default_cache_path() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bastion" / "digests.sqlite"
