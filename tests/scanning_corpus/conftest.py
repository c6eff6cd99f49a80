"""The generated scanner corpus (``generate.py``), built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scanning_corpus.generate import Sample, build_corpus


@pytest.fixture(scope="session")
def corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scanning-corpus")


@pytest.fixture(scope="session")
def corpus(corpus_root: Path) -> list[Sample]:
    """Every sample, benign and malicious; ``corpus_root/markers`` is empty when built."""
    return build_corpus(corpus_root)


@pytest.fixture(scope="session")
def corpus_by_name(corpus: list[Sample]) -> dict[str, Sample]:
    return {sample.name: sample for sample in corpus}
