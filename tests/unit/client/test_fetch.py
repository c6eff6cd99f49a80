"""A pull's files fetched two at a time: results in order, one failure stops the rest,
and progress reported from one thread at a time. The CLI's progress bar with files that
report in turns. The session is a stand-in serving bytes from memory; the whole pull
against a real hub is in tests/integration/hub."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bastion.cli._hub import Progress
from bastion.client._transfer import PULL_STREAMS, _Fetch
from bastion.errors import IntegrityError
from bastion.signing._manifest import Serialization

FILES = {
    "a.bin": [b"a" * 1000] * 3,
    "dir/b.bin": [b"b" * 700] * 5,
    "c.bin": [b"c" * 10] * 2,
    "d.bin": [],
}
STATEMENT = SimpleNamespace(serialization=Serialization())


class Session:
    """Serves each file's chunks; ``fail`` names one that breaks after its first chunk."""

    def __init__(self, fail: str | None = None, pause: float = 0.0) -> None:
        self.fail, self.pause = fail, pause
        self.sent: dict[str, int] = {}
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    @contextmanager
    def download(self, url: str, params: dict[str, str], chunk: int) -> Iterator[Iterator[bytes]]:
        name = url.removeprefix("/files/")
        with self._lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            yield self._chunks(name)
        finally:
            with self._lock:
                self.active -= 1

    def _chunks(self, name: str) -> Iterator[bytes]:
        for number, data in enumerate(FILES.get(name, [b"z" * 100] * 50)):
            if name == self.fail and number == 1:
                raise IntegrityError(f"{name} is damaged")
            self.sent[name] = self.sent.get(name, 0) + 1
            time.sleep(self.pause)
            yield data


def fetch(session: Session, folder: Path, progress: Any = None, files: Any = None) -> list[Any]:
    entries = [
        {"path": name, "size": sum(map(len, chunks))} for name, chunks in (files or FILES).items()
    ]
    return _Fetch(session, "/files/", {}, STATEMENT, folder, progress).all(entries)  # type: ignore[arg-type]


def test_every_file_is_written_and_its_digest_given_in_the_listed_order(tmp_path: Path) -> None:
    session = Session(pause=0.001)
    resources = fetch(session, tmp_path)
    assert [r.name for r in resources] == list(FILES)
    for resource, (name, chunks) in zip(resources, FILES.items(), strict=True):
        content = b"".join(chunks)
        assert (tmp_path / name).read_bytes() == content
        assert resource.digest == hashlib.sha256(content).digest()
    assert session.most_active == PULL_STREAMS == 2


def test_a_failing_file_stops_the_others_and_its_error_is_raised(tmp_path: Path) -> None:
    many = {"broken.bin": [b"x"] * 3, "long.bin": [b"y" * 10] * 400, "queued.bin": [b"q"]}
    session = Session(fail="broken.bin", pause=0.002)
    with pytest.raises(IntegrityError, match=r"broken\.bin is damaged"):
        fetch(session, tmp_path, files=many)
    assert session.sent["long.bin"] < 400  # stopped at a chunk, not read to its end
    assert "queued.bin" not in session.sent  # never started
    assert session.active == 0


def test_progress_is_reported_from_one_thread_at_a_time(tmp_path: Path) -> None:
    inside = threading.Lock()
    calls: list[tuple[str, int, int]] = []

    def progress(name: str, done: int, total: int) -> None:
        assert inside.acquire(blocking=False), "progress entered from two threads at once"
        try:
            time.sleep(0.001)
            calls.append((name, done, total))
        finally:
            inside.release()

    fetch(Session(pause=0.001), tmp_path, progress)
    finished = {(name, done) for name, done, total in calls if done == total}
    assert finished == {(name, sum(map(len, chunks))) for name, chunks in FILES.items() if chunks}


def test_the_progress_bar_shows_files_reporting_in_turns() -> None:
    bar = Progress(enabled=True)
    err = io.StringIO()
    with redirect_stderr(err):
        bar("a.bin", 0, 100)
        bar("b.bin", 50, 100)  # within 0.1 s of the last line: not drawn
        bar("b.bin", 100, 100)  # finished: always drawn, and the line ends
        bar("a.bin", 100, 100)
    lines = err.getvalue().split("\r")[1:]
    assert [line.split()[0] for line in lines] == ["a.bin", "b.bin", "a.bin"]
    assert [line.split()[1] for line in lines] == ["0%", "100%", "100%"]
    assert lines[1].endswith("MB/s\n")
    assert lines[2].endswith("MB/s\n")
