"""Rotating the key-encryption key: every data key re-wrapped, no data re-encrypted.

The keyring makes a new current KEK (the old ones stay so that anything not
yet re-wrapped still opens); each file's wrapped data key is unwrapped with
its old KEK and wrapped with the new one, in batches, each batch committed.
An interrupted rotation is finished by running it again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bastion.crypto import WrappedKey
from bastion.db import FileRow
from bastion.registry._hub import Hub
from bastion.registry._uploads import artifact_context

__all__ = ["rotate_kek"]

_BATCH = 500


def rotate_kek(hub: Hub) -> dict[str, Any]:
    previous = hub.keys.current_key_id
    current = hub.keys.rotate()
    rewrapped = 0
    last_id = 0
    while True:
        with hub.db.session() as s:
            rows = s.scalars(
                select(FileRow)
                .where(FileRow.id > last_id, FileRow.wrapped_key.is_not(None))
                .order_by(FileRow.id)
                .limit(_BATCH)
            ).all()
            if not rows:
                break
            for row in rows:
                last_id = row.id
                assert row.wrapped_key is not None
                wrapped = WrappedKey.from_text(row.wrapped_key)
                if wrapped.kek_id == current:
                    continue
                context = artifact_context(row.blob_id)
                data_key = hub.keys.unwrap(wrapped, context=context)
                row.wrapped_key = hub.keys.wrap(data_key, context=context).to_text()
                rewrapped += 1
    return {"previous_kek": previous, "current_kek": current, "rewrapped": rewrapped}
