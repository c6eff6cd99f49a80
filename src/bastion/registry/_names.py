"""Names on the hub and references to model versions, checked against strict patterns.

A reference is ``namespace/model@version`` or ``namespace/model:alias``.
Names are lower-case so that two names never differ only in case; versions
allow what semantic versions and dates need. Anything else is refused before
it reaches a query, a log line or a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bastion._names import is_name
from bastion.errors import InputError

__all__ = [
    "DEFAULT_CLASSIFICATION",
    "MAX_FILE_PATH",
    "ModelRef",
    "check_alias",
    "check_classification",
    "check_file_path",
    "check_name",
    "check_version",
    "parse_ref",
]

_VERSION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.+_-]{0,62}[A-Za-z0-9])?")
MAX_FILE_PATH = 1024


def check_name(value: str, what: str = "name") -> str:
    if not is_name(value):
        raise InputError(
            f"{what} {value!r} is not valid: use 1-64 lower-case letters, digits, '.', '_' "
            "or '-', starting and ending with a letter or digit"
        )
    return value


def check_version(value: str) -> str:
    if not isinstance(value, str) or not _VERSION.fullmatch(value) or ".." in value:
        raise InputError(
            f"version {value!r} is not valid: use 1-64 letters, digits, '.', '+', '_' or '-', "
            "starting and ending with a letter or digit (e.g. 1.2.0)"
        )
    return value


def check_alias(value: str) -> str:
    check_name(value, "alias")
    if _VERSION.fullmatch(value) and value[0].isdigit():
        raise InputError(
            f"alias {value!r} must not start with a digit (it would look like a version)"
        )
    return value


#: The classification a model has until an administrator sets one.
DEFAULT_CLASSIFICATION = "internal"
_CLASSIFICATION = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def check_classification(value: str) -> str:
    """A data classification label: ``public``, ``internal``, ``restricted``, ``phi``..."""
    if not isinstance(value, str) or not _CLASSIFICATION.fullmatch(value):
        raise InputError(
            f"classification {str(value)[:40]!r} must be 1-32 lower-case letters, digits, "
            "'_' or '-', starting with a letter (e.g. public, internal, restricted)"
        )
    return value


def check_file_path(value: str) -> str:
    """A relative, normalised file name inside a model: no '..', no absolute path."""
    if not isinstance(value, str) or not value:
        raise InputError("a file name is empty; name every file")
    try:
        encoded = value.encode()
    except UnicodeEncodeError:  # a lone surrogate: JSON can carry one, no file name can
        raise InputError(
            f"file name {value.encode('utf-8', 'backslashreplace').decode()[:256]!r} is not "
            "valid Unicode text; name files in UTF-8"
        ) from None
    if len(encoded) > MAX_FILE_PATH:
        raise InputError(f"file name is longer than {MAX_FILE_PATH} bytes")
    if "\\" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InputError(f"file name {value!r} holds a backslash or a control character")
    parts = value.split("/")
    if value.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InputError(
            f"file name {value!r} is not a plain relative path (no '..', '.', empty parts "
            "or leading '/')"
        )
    return value


@dataclass(frozen=True, slots=True)
class ModelRef:
    namespace: str
    model: str
    version: str | None = None
    alias: str | None = None

    @property
    def name(self) -> str:
        return f"{self.namespace}/{self.model}"

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.alias is not None:
            return f"{self.name}:{self.alias}"
        return self.name


def parse_ref(text: str, *, need_version: bool = False, allow_alias: bool = True) -> ModelRef:
    """Parse ``ns/model``, ``ns/model@version`` or ``ns/model:alias``."""
    if not isinstance(text, str) or len(text) > 256:
        raise InputError("a model reference must be a string of at most 256 characters")
    version = alias = None
    body = text
    if "@" in body:
        body, version = body.split("@", 1)
    elif ":" in body:
        body, alias = body.split(":", 1)
    parts = body.split("/")
    if len(parts) != 2:
        raise InputError(
            f"model reference {text!r} is not valid: write namespace/model@version "
            "or namespace/model:alias"
        )
    ns = check_name(parts[0], "namespace")
    model = check_name(parts[1], "model name")
    if version is not None:
        check_version(version)
    if alias is not None:
        if not allow_alias:
            raise InputError(f"model reference {text!r} must name a version (@version)")
        check_alias(alias)
    if need_version and version is None and alias is None:
        raise InputError(f"model reference {text!r} must name a version (@version) or an alias")
    return ModelRef(ns, model, version, alias)
