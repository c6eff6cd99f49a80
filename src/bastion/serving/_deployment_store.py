"""The gateway's deployments in the hub's database, with every revision they went through."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError as SqlIntegrityError

from bastion._names import is_name
from bastion.db import Database, DeploymentRevision, DeploymentRow, aware, iso
from bastion.errors import ConflictError, InputError, NotFoundError
from bastion.serving._deployment_config import DeploymentConfig
from bastion.serving._routing import RoutePlan

__all__ = ["DeploymentRecord", "DeploymentStore", "check_deployment_name"]


def check_deployment_name(name: object) -> str:
    if not is_name(name):
        raise InputError(
            "a deployment name is 1-64 lower-case letters, digits, '.', '_' or '-', starting "
            "and ending with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class DeploymentRecord:
    """A deployment as stored: ``plan`` is None for one that fronts an upstream server."""

    name: str
    namespace: str
    plan: RoutePlan | None
    config: DeploymentConfig
    revision: int
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str

    @classmethod
    def draft(
        cls, name: str, namespace: str, plan: RoutePlan | None, config: DeploymentConfig
    ) -> DeploymentRecord:
        """A deployment not stored yet: revision 0, made now by nobody."""
        now = datetime.now(UTC)
        return cls(name, namespace, plan, config, 0, now, "", now, "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "kind": "upstream" if self.plan is None else "hub",
            "plan": None if self.plan is None else self.plan.to_dict(),
            "config": self.config.to_dict(),
            "revision": self.revision,
            "created_at": iso(self.created_at),
            "created_by": self.created_by,
            "updated_at": iso(self.updated_at),
            "updated_by": self.updated_by,
        }


def _plan_text(plan: RoutePlan | None) -> str:
    return "{}" if plan is None else json.dumps(plan.to_dict(), sort_keys=True)


def _plan(text: str) -> RoutePlan | None:
    data = json.loads(text)
    return RoutePlan.from_dict(data) if data else None


def _record(row: DeploymentRow) -> DeploymentRecord:
    return DeploymentRecord(
        name=row.name,
        namespace=row.namespace,
        plan=_plan(row.plan),
        config=DeploymentConfig.from_dict(json.loads(row.config)),
        revision=row.revision,
        created_at=aware(row.created_at),
        created_by=row.created_by,
        updated_at=aware(row.updated_at),
        updated_by=row.updated_by,
    )


class DeploymentStore:
    def __init__(self, db: Database, now: Callable[[], datetime]) -> None:
        self._db = db
        self._now = now

    def get(self, name: str) -> DeploymentRecord:
        with self._db.session() as s:
            row = s.scalars(select(DeploymentRow).where(DeploymentRow.name == name)).first()
            if row is None:
                raise NotFoundError(f"no deployment {name!r}; see 'bastion deployments ls'")
            return _record(row)

    def all(self) -> list[DeploymentRecord]:
        with self._db.session() as s:
            rows = s.scalars(select(DeploymentRow).order_by(DeploymentRow.name)).all()
            return [_record(r) for r in rows]

    def save(
        self,
        name: str,
        namespace: str,
        plan: RoutePlan | None,
        config: DeploymentConfig,
        *,
        actor: str,
        change: str,
        reason: str = "",
        expect_revision: int | None,
    ) -> DeploymentRecord:
        """Create (``expect_revision`` None) or change a deployment, keeping the revision.

        Raises ConflictError when the deployment exists although it should not, or changed
        since ``expect_revision`` was read.
        """
        check_deployment_name(name)
        now = self._now()
        plan_text, config_text = _plan_text(plan), json.dumps(config.to_dict(), sort_keys=True)
        try:
            with self._db.session() as s:
                row = s.scalars(
                    select(DeploymentRow).where(DeploymentRow.name == name).with_for_update()
                ).first()
                if expect_revision is None:
                    if row is not None:
                        raise ConflictError(f"deployment {name!r} exists already")
                    row = DeploymentRow(
                        name=name, namespace=namespace, revision=0, created_at=now,
                        created_by=actor, plan=plan_text, config=config_text,
                        updated_at=now, updated_by=actor,
                    )  # fmt: skip
                    s.add(row)
                elif row is None:
                    raise NotFoundError(f"no deployment {name!r}; see 'bastion deployments ls'")
                elif row.revision != expect_revision:
                    raise ConflictError(
                        f"deployment {name!r} changed meanwhile (revision {row.revision}); "
                        "look at it again and retry"
                    )
                row.revision += 1
                row.plan, row.config, row.namespace = plan_text, config_text, namespace
                row.updated_at, row.updated_by = now, actor
                s.flush()
                s.add(
                    DeploymentRevision(
                        deployment_id=row.id,
                        revision=row.revision,
                        plan=plan_text,
                        config=config_text,
                        changed_at=now,
                        changed_by=actor,
                        change=change,
                        reason=reason[:1000],
                    )
                )
                s.flush()
                return _record(row)
        except SqlIntegrityError as exc:  # a concurrent create of the same name
            raise ConflictError(f"deployment {name!r} exists already") from exc

    def delete(self, name: str) -> None:
        with self._db.session() as s:
            done = s.execute(delete(DeploymentRow).where(DeploymentRow.name == name))
            if not getattr(done, "rowcount", 0):
                raise NotFoundError(f"no deployment {name!r}; see 'bastion deployments ls'")

    def revisions(self, name: str) -> list[dict[str, Any]]:
        """Every revision, newest first."""
        with self._db.session() as s:
            row = s.scalars(select(DeploymentRow).where(DeploymentRow.name == name)).first()
            if row is None:
                raise NotFoundError(f"no deployment {name!r}; see 'bastion deployments ls'")
            found = s.scalars(
                select(DeploymentRevision)
                .where(DeploymentRevision.deployment_id == row.id)
                .order_by(DeploymentRevision.revision.desc())
            ).all()
            return [
                {
                    "revision": r.revision,
                    "plan": json.loads(r.plan) or None,
                    "config": json.loads(r.config),
                    "changed_at": iso(aware(r.changed_at)),
                    "changed_by": r.changed_by,
                    "change": r.change,
                    "reason": r.reason,
                }
                for r in found
            ]
