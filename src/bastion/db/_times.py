"""Timestamps in and out of the database, always timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["aware", "iso"]


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes for timezone-aware columns; they hold UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    """RFC 3339 with a ``Z``, or None."""
    return (
        None if value is None else aware(value).astimezone(UTC).isoformat().replace("+00:00", "Z")
    )
