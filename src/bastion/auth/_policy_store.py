"""The hub's policies in force: versioned in the database, validated before they apply.

Version 0 is Bastion's built-in policy set (``policies/default``). ``bastion policy apply``
stores a new version — every file's text, its digest, who applied it and when — only
after the whole set parses and validates against the schema. Each hub process checks the
database for a newer version at most every ``check_seconds``, so every process of a hub
enforces a new version within that time; the process that applied it, at once.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from bastion.auth._policy import PolicyEngine, PolicySource, default_sources
from bastion.db import Database, PolicyVersion, iso
from bastion.errors import ConflictError, InputError, NotFoundError, PolicyError

__all__ = ["PolicyStore", "policy_digest"]

MAX_COMMENT = 1000


def policy_digest(sources: Sequence[PolicySource]) -> str:
    """SHA-256 over the files' names and texts, in order."""
    h = hashlib.sha256()
    for source in sources:
        for part in (source.name, source.text):
            data = part.encode()
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)
    return h.hexdigest()


class PolicyStore:
    """The policy set in force, and its history."""

    def __init__(self, db: Database, *, check_seconds: float = 5.0) -> None:
        self._db = db
        self._check_seconds = check_seconds
        self._lock = threading.Lock()
        self._version = -1
        self._engine: PolicyEngine | None = None
        self._checked = 0.0

    def engine(self) -> PolicyEngine:
        """The engine of the newest version (checked at most every ``check_seconds``)."""
        engine = self._engine
        if engine is not None and time.monotonic() - self._checked < self._check_seconds:
            return engine
        with self._lock:
            if self._engine is not None and time.monotonic() - self._checked < self._check_seconds:
                return self._engine
            with self._db.session() as s:
                newest = s.scalar(select(func.max(PolicyVersion.version))) or 0
            if newest != self._version or self._engine is None:
                self._engine = self._load(newest)
                self._version = newest
            self._checked = time.monotonic()
            return self._engine

    @property
    def version(self) -> int:
        self.engine()
        return self._version

    def _load(self, version: int) -> PolicyEngine:
        if version == 0:
            return PolicyEngine.default()
        return PolicyEngine(self._sources(version))

    def _sources(self, version: int) -> list[PolicySource]:
        with self._db.session() as s:
            row = s.get(PolicyVersion, version)
            if row is None:
                raise NotFoundError(f"no policy version {version}")
            files = json.loads(row.files)
        return [PolicySource(name, text) for name, text in files.items()]

    def validate(self, sources: Sequence[PolicySource]) -> PolicyEngine:
        """An engine for ``sources``, or PolicyError naming every problem."""
        if not sources:
            raise PolicyError("no policy files given: nothing would be allowed")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise PolicyError("two policy files have the same name; rename one")
        return PolicyEngine(sources)

    def apply(
        self, sources: Sequence[PolicySource], *, applied_by: str, comment: str, now: datetime
    ) -> dict[str, Any]:
        """Validate ``sources`` and make them the newest version."""
        if len(comment) > MAX_COMMENT:
            raise InputError(f"the comment is over {MAX_COMMENT} characters; shorten it")
        engine = self.validate(sources)
        digest = policy_digest(sources)
        files = json.dumps({s.name: s.text for s in sources})
        try:
            with self._db.session() as s:
                newest = s.scalar(select(func.max(PolicyVersion.version))) or 0
                version = newest + 1
                s.add(
                    PolicyVersion(
                        version=version,
                        digest=digest,
                        files=files,
                        applied_at=now,
                        applied_by=applied_by[:256],
                        comment=comment,
                    )
                )
        except SqlIntegrityError as exc:
            raise ConflictError("policies were applied meanwhile; look, then apply again") from exc
        with self._lock:
            self._engine, self._version, self._checked = engine, version, time.monotonic()
        return {
            "version": version,
            "digest": digest,
            "files": sorted(s.name for s in sources),
            "policies": len(engine.policy_ids),
        }

    def current(self) -> dict[str, Any]:
        """The version in force with its files (version 0: the built-in defaults)."""
        version = self.version
        if version == 0:
            # Plain file names, as `policy apply` sends them back, and the digest of those.
            sources = [PolicySource(s.name.rpartition("/")[2], s.text) for s in default_sources()]
            return {
                "version": 0,
                "digest": policy_digest(sources),
                "applied_at": None,
                "applied_by": "bastion (built-in defaults)",
                "comment": "",
                "files": {s.name: s.text for s in sources},
            }
        with self._db.session() as s:
            row = s.get(PolicyVersion, version)
            if row is None:
                raise NotFoundError(f"no policy version {version}")
            return {
                "version": row.version,
                "digest": row.digest,
                "applied_at": iso(row.applied_at),
                "applied_by": row.applied_by,
                "comment": row.comment,
                "files": json.loads(row.files),
            }

    def history(self) -> list[dict[str, Any]]:
        with self._db.session() as s:
            rows = s.scalars(select(PolicyVersion).order_by(PolicyVersion.version)).all()
            return [
                {
                    "version": r.version,
                    "digest": r.digest,
                    "applied_at": iso(r.applied_at),
                    "applied_by": r.applied_by,
                    "comment": r.comment,
                    "files": sorted(json.loads(r.files)),
                }
                for r in rows
            ]
