"""Pushing a signed model folder to the hub, and pulling one back verified.

A pull writes into a fresh folder beside the destination, hashes each file as
it arrives, verifies the signature (against the namespace's trust policy from
the hub, or the caller's own) and only then renames the folder into place. A
failed pull leaves nothing behind. A failed push aborts its upload.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from bastion._files import read_input
from bastion.client._http import HubSession
from bastion.errors import (
    BastionError,
    InputError,
    PathNotFoundError,
    QuarantinedError,
    UsageError,
)
from bastion.registry._names import ModelRef, check_file_path
from bastion.signing import PrivateKey, StreamDigester, TrustPolicy, sign, verify_digests
from bastion.signing._bundle import MAX_BUNDLE_BYTES, Bundle, Statement
from bastion.signing._manifest import Resource
from bastion.signing._sign import default_signature_path
from bastion.signing._verify import read_signature, signed_files

__all__ = ["Progress", "pull", "push"]

#: Called with (file name, bytes done, bytes in all) as a transfer advances.
Progress = Callable[[str, int, int], None]
_CHUNK = 1 << 20
#: Files of one pull downloaded at once (see _Fetch).
PULL_STREAMS = 2


def _q(path: str) -> str:
    return quote(path, safe="/")


def push(
    session: HubSession,
    model: Path,
    ref: ModelRef,
    *,
    key: PrivateKey | str | os.PathLike[str] | None = None,
    passphrase: bytes | None = None,
    signature: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    if ref.version is None:
        raise UsageError(f"push names a version: {ref.name}@<version>")
    if not model.is_dir():
        raise PathNotFoundError(f"{os.fspath(model)!r} is not a folder; push a model folder")
    if key is not None and signature is not None:
        raise UsageError("give --sign-with or --signature, not both")
    with tempfile.TemporaryDirectory(prefix="bastion-push-") as tmp:
        if key is not None:
            sig_path = Path(tmp) / "model.sig"
            sign(model, key, passphrase=passphrase, signature_path=sig_path)
        else:
            sig_path = Path(signature) if signature is not None else default_signature_path(model)
            if not sig_path.exists():
                raise UsageError(
                    f"{os.fspath(model)!r} has no signature ({sig_path.name}); sign it first "
                    "or pass --sign-with KEY"
                )
        bundle = read_input(sig_path, "signature", limit=MAX_BUNDLE_BYTES)
    statement = Statement.from_payload(Bundle.from_json(bundle).payload)
    files = {}
    for name in signed_files(statement):
        path = model / check_file_path(name)
        if path.is_symlink() or not path.is_file():
            raise InputError(f"{name!r} is signed but is not a regular file in the model")
        files[name] = path.stat().st_size
    import base64

    opened = session.json(
        "POST",
        f"/api/v1/models/{ref.namespace}/{ref.model}/versions",
        json={
            "version": ref.version,
            "signature": base64.b64encode(bundle).decode(),
            "files": files,
        },
    )
    upload = opened["upload_id"]
    try:
        for name, size in files.items():
            session.request(
                "PUT",
                f"/api/v1/uploads/{upload}/files/{_q(name)}",
                content=_read_chunks(model / name, name, size, progress),
                headers={"content-length": str(size), "content-type": "application/octet-stream"},
            )
        result: dict[str, Any] = session.json("POST", f"/api/v1/uploads/{upload}/commit")
    except QuarantinedError:
        raise  # a quarantined commit is final; nothing to abort
    except BaseException:
        # Any other failure leaves the upload open (a commit the hub could not finish
        # included), and an open upload holds the version: drop it so a push can start
        # again. A commit that did finish unseen refuses the abort, and stands.
        _abort(session, upload)
        raise
    return {**result, "ref": str(ref), "files": len(files), "bytes": sum(files.values())}


def _abort(session: HubSession, upload: str) -> None:
    # If this fails too, the hub drops the upload when it expires or restarts.
    with contextlib.suppress(BastionError):
        session.request("DELETE", f"/api/v1/uploads/{upload}")


def _read_chunks(path: Path, name: str, size: int, progress: Progress | None) -> Iterator[bytes]:
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            done += len(chunk)
            if done > size:
                raise InputError(f"{name!r} grew while it was being pushed")
            if progress is not None:
                progress(name, done, size)
            yield chunk
    if done != size:
        raise InputError(f"{name!r} changed size while it was being pushed")


def pull(
    session: HubSession,
    ref: ModelRef,
    dest: Path,
    *,
    allow_yanked: bool = False,
    trust: TrustPolicy | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    if dest.exists() or dest.is_symlink():
        raise UsageError(f"{os.fspath(dest)!r} exists; pull into a new folder")
    base = f"/api/v1/models/{ref.namespace}/{ref.model}"
    where = f"{base}/versions/{ref.version}" if ref.version else f"{base}/aliases/{ref.alias}"
    info = session.json("GET", where)
    version = info["version"]
    if trust is None:
        ns = session.json("GET", f"/api/v1/namespaces/{ref.namespace}")
        trust = TrustPolicy.from_toml(
            ns["trust_policy"], base_dir=None, source=f"the trust policy of {ref.namespace}"
        )
    signature = info["signature"].encode()
    _signer, statement = read_signature(signature, trust=trust)
    made = _make_folders(dest.parent)
    tmp: Path | None = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.pulling-", dir=dest.parent))
        fetch = _Fetch(
            session,
            f"{base}/versions/{version}/files/",
            {"allow_yanked": str(allow_yanked).lower()},
            statement,
            tmp,
            progress,
        )
        resources = fetch.all(info["files"])
        result, _ = verify_digests(signature, resources, trust=trust)
        sig_name = "model.sig"
        if not (tmp / sig_name).exists():
            (tmp / sig_name).write_bytes(signature)
        os.rename(tmp, dest)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        _remove_folders(made)
        raise
    return {
        "ref": f"{ref.namespace}/{ref.model}@{version}",
        "path": os.fspath(dest),
        "files": len(info["files"]),
        "bytes": sum(int(f["size"]) for f in info["files"]),
        "root_digest": result.root_digest,
        "signers": [s.to_dict() for s in result.signers],
        "yanked": info["yanked"],
    }


class _Stopped(Exception):
    """Another file of the pull failed: this one stops too."""


class _Fetch:
    """Downloads a version's files into ``folder``, :data:`PULL_STREAMS` at a time.

    A pull is bound by CPU (TLS, SHA-256 and the writes, on both sides of the connection),
    and one file at a time left the cores idle about a fifth of the time: two streams
    keep them busy. Each file is hashed and written by its own :class:`_Absorber`; the
    progress callback is called from one thread at a time. When a file fails, the others
    stop at their next chunk, and the first failure is raised once all have stopped.
    """

    def __init__(
        self,
        session: HubSession,
        url: str,
        params: dict[str, str],
        statement: Statement,
        folder: Path,
        progress: Progress | None,
    ) -> None:
        self._session, self._url, self._params = session, url, params
        self._statement, self._folder = statement, folder
        self._lock = threading.Lock()
        self._progress = progress
        self._stop = threading.Event()

    def all(self, entries: list[dict[str, Any]]) -> list[Resource]:
        """Every file's resources (for :func:`verify_digests`), in the order of ``entries``."""
        names = [check_file_path(entry["path"]) for entry in entries]
        with ThreadPoolExecutor(
            max_workers=PULL_STREAMS, thread_name_prefix="bastion-fetch"
        ) as pool:
            futures = [
                pool.submit(self._one, name, int(entry["size"]))
                for name, entry in zip(names, entries, strict=True)
            ]
            try:
                futures_wait(futures, return_when=FIRST_EXCEPTION)
            finally:  # a failure, or the caller interrupted: the others stop too
                if not all(f.done() and f.exception() is None for f in futures):
                    self._stop.set()
            futures_wait(futures)
        failures = [error for f in futures if (error := f.exception()) is not None]
        if failures:  # the failure that stopped the others, not one of their stops
            raise next((e for e in failures if not isinstance(e, _Stopped)), failures[0])
        return [resource for f in futures for resource in f.result()]

    def _one(self, name: str, size: int) -> list[Resource]:
        if self._stop.is_set():  # queued behind a file that failed
            raise _Stopped
        try:
            digester = StreamDigester(name, self._statement.serialization)
            target = _create(self._folder, name)
            with (
                os.fdopen(target, "wb") as out,
                _Absorber(digester, out, name, size, self._report) as absorber,
                self._session.download(self._url + _q(name), self._params, _CHUNK) as chunks,
            ):
                for chunk in chunks:
                    if self._stop.is_set():
                        raise _Stopped
                    absorber.feed(chunk)
        except BaseException:
            self._stop.set()  # before this thread can take the next file
            raise
        return digester.resources()

    def _report(self, name: str, done: int, size: int) -> None:
        if self._progress is not None:
            with self._lock:
                self._progress(name, done, size)


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; those created, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for made in reversed(missing):
        made.mkdir(exist_ok=True)
    return missing


def _remove_folders(made: list[Path]) -> None:
    """Remove folders a failed pull created (deepest first), if nothing else went in them."""
    for folder in made:
        with contextlib.suppress(OSError):
            folder.rmdir()


class _Absorber:
    """Hashes and writes a pulled file's chunks in a worker thread while the next one arrives.

    One chunk is in flight at a time, so the order is kept and memory stays at two
    chunks; hashing and writing release the GIL, so receiving (TLS, HTTP) goes on
    meanwhile. An error in the worker is raised by the next :meth:`feed` or on exit.
    """

    def __init__(
        self,
        digester: StreamDigester,
        out: BinaryIO,
        name: str,
        size: int,
        progress: Progress | None,
    ) -> None:
        self._digester = digester
        self._out = out
        self._name = name
        self._size = size
        self._progress = progress
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bastion-pull")
        self._pending: Future[None] | None = None

    def __enter__(self) -> _Absorber:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                self._wait()
            elif self._pending is not None:  # already failing: let the worker finish, quietly
                futures_wait([self._pending])
        finally:
            self._pool.shutdown(wait=True)

    def feed(self, chunk: bytes | bytearray) -> None:
        self._wait()
        self._pending = self._pool.submit(self._absorb, chunk)

    def _absorb(self, chunk: bytes | bytearray) -> None:
        self._digester.update(chunk)
        self._out.write(chunk)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()
            if self._progress is not None:
                self._progress(self._name, self._digester.size, self._size)


def _create(root: Path, name: str) -> int:
    folder = root
    parts = name.split("/")
    for part in parts[:-1]:
        folder = folder / part
        folder.mkdir(mode=0o755, exist_ok=True)
        if folder.is_symlink():
            raise InputError(f"{name!r} would be written through a link")
    return os.open(
        folder / parts[-1],
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o644,
    )
