"""Reading a hub version for serving, verified right before every load.

Every (re)load of a worker goes through :meth:`HubModelSource.load`: the version must be
published (admitted: digests, signature and scan passed), not yanked, and its signature must
verify against the namespace's trust policy *as it is now* over the exact bytes decrypted
from the store. The model's bytes stay in memory: they are handed to the worker over a pipe
and never written to disk in plaintext.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bastion.errors import (
    InputError,
    PayloadTooLargeError,
    QuarantinedError,
    VersionYankedError,
)
from bastion.registry import Catalog, ModelRef, parse_ref
from bastion.registry._catalog import check_policy
from bastion.serving._runtimes import RuntimeKind, select_model_file
from bastion.signing import StreamDigester, read_signature, verify_digests

__all__ = ["HubModelSource", "VerifiedModel", "check_servable"]

#: The largest model file the gateway loads into a worker (ONNX Runtime's own cap is 2 GiB).
DEFAULT_MAX_MODEL_BYTES = 1 << 30


@dataclass(frozen=True)
class VerifiedModel:
    """A version's model file, read and verified; ``model`` never touched the disk decrypted."""

    ref: str
    runtime: RuntimeKind
    path: str
    model: bytes = field(repr=False)
    root_digest: str
    signers: tuple[dict[str, Any], ...]


def check_servable(info: dict[str, Any]) -> None:
    """Refuse a version that was not admitted or was yanked (``info`` from Catalog.version)."""
    if info["state"] != "published":
        raise QuarantinedError(
            f"{info['ref']} is {info['state']} and is never served: "
            + ("; ".join(info.get("reasons") or []) or "it was not admitted")
        )
    if info["yanked"]:
        raise VersionYankedError(
            f"{info['ref']} was yanked ({info['yank_reason']}) and is never deployed"
        )


class HubModelSource:
    """Loads hub versions for the gateway; call :meth:`load` from a worker thread."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        now: Callable[[], datetime],
        max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES,
    ) -> None:
        self._catalog = catalog
        self._now = now
        self._max = max_model_bytes

    def resolve(self, text: str) -> tuple[ModelRef, dict[str, Any]]:
        """``ns/model@version`` or ``ns/model:alias`` to the exact version, checked servable."""
        ref = parse_ref(text)
        if ref.version is None and ref.alias is None:
            raise InputError(
                f"{text!r}: name a version (ns/model@1.2.0) or an alias (ns/model:prod)"
            )
        info = self._catalog.version(ref)
        check_servable(info)
        exact = ModelRef(ref.namespace, ref.model, version=info["version"])
        select_model_file({f["path"]: f["size"] for f in info["files"]})
        return exact, info

    def load(self, text: str) -> VerifiedModel:
        """Read and verify ``ns/model@version``; raises if it may not be served now."""
        ref, info = self.resolve(text)
        runtime, model_path = select_model_file({f["path"]: f["size"] for f in info["files"]})
        size = next(int(f["size"]) for f in info["files"] if f["path"] == model_path)
        if size > self._max:
            raise PayloadTooLargeError(
                f"{ref}: {model_path} is {size} bytes; the gateway serves models up to "
                f"{self._max} bytes"
            )
        trust = check_policy(self._catalog.namespace(ref.namespace)["trust_policy"])
        signature = info["signature"].encode()
        now = self._now()
        _signer, statement = read_signature(signature, trust=trust, now=now, source=str(ref))
        resources = []
        model = bytearray()
        for entry in info["files"]:
            digester = StreamDigester(entry["path"], statement.serialization)
            keep = entry["path"] == model_path
            served = self._catalog.open_file(ref, entry["path"], allow_yanked=False)
            for chunk in served.chunks:
                digester.update(chunk)
                if keep:
                    model += chunk
            resources.extend(digester.resources())
        result, _ = verify_digests(signature, resources, trust=trust, now=now, source=str(ref))
        return VerifiedModel(
            ref=str(ref),
            runtime=runtime,
            path=model_path,
            model=bytes(model),
            root_digest=result.root_digest or "",
            signers=tuple(s.to_dict() for s in result.signers),
        )
