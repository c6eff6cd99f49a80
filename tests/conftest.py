"""Shared fixtures: small model trees and keys, built fresh for each test."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from bastion.signing import PrivateKey, generate_key

# Timing is never asserted: on a shared, loaded machine an example may take longer than
# hypothesis's 200 ms deadline, or generating data may be slow, without anything being wrong.
settings.register_profile("bastion", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("bastion")

ModelFactory = Callable[..., Path]

#: A model laid out like a Hugging Face repository, with git metadata to ignore.
DEFAULT_FILES: dict[str, bytes] = {
    "config.json": b'{"hidden_size": 8}',
    "weights/part-0.bin": bytes(range(256)) * 12,
    "weights/part-1.bin": b"\x01" * 2500,
    "tokenizer/vocab.txt": b"hello\nworld\n",
    ".cache/notes.txt": b"hidden files are signed too",
    ".git/HEAD": b"ref: refs/heads/main\n",
}


@pytest.fixture
def make_model(tmp_path: Path) -> ModelFactory:
    """Build a model folder from {relative name: content}; old enough for the digest cache."""

    def build(files: dict[str, bytes] | None = None, name: str = "model") -> Path:
        root = tmp_path / name
        for rel, content in (DEFAULT_FILES if files is None else files).items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            os.utime(path, (1_700_000_000, 1_700_000_000))
        root.mkdir(exist_ok=True)
        return root

    return build


@pytest.fixture
def model(make_model: ModelFactory) -> Path:
    return make_model()


@pytest.fixture(scope="session")
def key() -> PrivateKey:
    return generate_key("ecdsa-p256")


@pytest.fixture(scope="session")
def other_key() -> PrivateKey:
    return generate_key("ecdsa-p256")
