"""A real hub with its gateway, and ONNX models published to it, for the gateway's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

import bastion
from bastion.client import Client
from tests.integration.hub.conftest import RunningHub, make_key, start_hub, stop_hub
from tests.support.models import write_onnx_model

__all__ = ["Published", "published"]


class Published:
    """A hub with med/lr@1.0.0 and med/lr@2.0.0 (logistic regressions), med/rf@1.0.0 (a
    forest) and med/lr2@1.0.0 (another logistic regression) published, and keys per role."""

    def __init__(
        self,
        hub: RunningHub,
        admin: Client,
        key: bastion.PrivateKey,
        root: Path,
        server: uvicorn.Server,
    ) -> None:
        self.hub = hub
        self.server = server
        self.admin = admin
        self.key = key
        self.root = root
        self.invoker = make_key(admin, ("med", "invoker"))
        self.consumer = make_key(admin, ("med", "consumer"))
        self.auditor = make_key(admin, ("*", "auditor"))

    def push(self, ref: str, kind: str = "logistic", *, seed: int = 0) -> str:
        folder = write_onnx_model(self.root / ref.replace("/", "_"), kind, seed=seed)
        self.admin.push(folder, ref, key=self.key)
        return ref


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    root = tmp_path_factory.mktemp("gateway")
    running, server, thread = start_hub(root / "hub-data")
    key = bastion.generate_key("ed25519")
    with running.client() as admin:
        admin.create_namespace("med", bastion.TrustPolicy.for_keys([key.public_key]))
        found = Published(running, admin, key, root, server)
        found.push("med/lr@1.0.0", seed=0)
        found.push("med/lr@2.0.0", seed=3)
        found.push("med/rf@1.0.0", "forest")
        found.push("med/lr2@1.0.0", seed=1)
        yield found
    stop_hub(running, server, thread)
