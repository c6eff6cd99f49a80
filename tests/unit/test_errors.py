"""Every error has a stable, unique code and the exit code docs/cli.md documents."""

from __future__ import annotations

import re
from pathlib import Path

import bastion
from bastion import errors

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _error_classes() -> list[type[errors.BastionError]]:
    return [
        obj
        for name in errors.__all__
        if isinstance(obj := getattr(errors, name), type) and issubclass(obj, errors.BastionError)
    ]


def test_codes_are_unique_and_documented_with_their_exit_codes() -> None:
    documented = dict(re.findall(r"^\| `([a-z_]+)` \| (\d+) \|", DOC.read_text(), flags=re.M))
    classes = [c for c in _error_classes() if c is not errors.BastionError]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
    assert {c.code: str(c.exit_code) for c in classes} == documented


def test_every_error_is_public_and_serialisable() -> None:
    for cls in _error_classes():
        assert getattr(bastion, cls.__name__) is cls
        body = cls("what went wrong").to_dict()
        assert {k: body[k] for k in ("code", "message")} == {
            "code": cls.code,
            "message": "what went wrong",
        }
        # Only errors that carry more say more: how long to wait.
        assert set(body) - {"code", "message"} == (
            {"retry_after"} if cls is bastion.RateLimitedError else set()
        )
