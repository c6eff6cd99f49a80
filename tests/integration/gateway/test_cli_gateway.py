"""The gateway's commands through ``bastion.cli.main``: deploy, rollout, deployments, records."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bastion.cli import main
from tests.integration.gateway.conftest import Published
from tests.support.models import breast_cancer


def _run(capsys: pytest.CaptureFixture[str], *argv: str, expect: int = 0) -> Any:
    capsys.readouterr()
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == expect, f"exit {code}; stderr: {err}"
    return json.loads(out)


@pytest.fixture
def env(published: Published, monkeypatch: pytest.MonkeyPatch) -> Published:
    monkeypatch.setenv("BASTION_URL", published.hub.url)
    monkeypatch.setenv("BASTION_TOKEN", published.hub.admin_token)
    monkeypatch.delenv("BASTION_CA", raising=False)
    return published


def test_deploy_canary_promote_and_list_from_the_command_line(
    env: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    made = _run(capsys, "deploy", "med/lr@1.0.0", "--name", "cli", "--output", "top-k=1")
    assert made["plan"]["stable"] == ["med/lr@1.0.0"]
    assert made["config"]["output"] == {"default": "top-k=1"}
    canary = _run(capsys, "deploy", "med/lr@2.0.0", "--name", "cli", "--canary", "25")
    assert canary["plan"]["candidate"] == "med/lr@2.0.0"
    assert canary["plan"]["canary_percent"] == 25
    promoted = _run(capsys, "rollout", "promote", "cli")
    assert promoted["plan"]["stable"] == ["med/lr@2.0.0"]
    failed = _run(capsys, "rollout", "rollback", "cli", expect=2)
    assert failed["error"]["code"] == "conflict"
    listed = _run(capsys, "deployments", "ls")
    assert "cli" in {d["name"] for d in listed["deployments"]}
    shown = _run(capsys, "deployments", "show", "cli")
    assert [r["change"] for r in shown["revisions"]] == ["promote", "canary", "deploy"]
    assert _run(capsys, "deployments", "rm", "cli") == {"removed": "cli"}
    gone = _run(capsys, "deployments", "show", "cli", expect=2)
    assert gone["error"]["code"] == "not_found"


def test_deploy_refuses_bad_options_with_clear_errors(
    env: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    usage = _run(capsys, "deploy", "--name", "nothing", expect=2)
    assert usage["error"]["code"] == "usage"
    bad_policy = _run(
        capsys, "deploy", "med/lr@1.0.0", "--name", "x", "--output", "top-k=0", expect=2
    )
    assert bad_policy["error"]["code"] == "bad_input"
    canary_alone = _run(
        capsys, "deploy", "med/lr@1.0.0", "--name", "fresh", "--canary", "5", expect=2
    )
    assert "first" in canary_alone["error"]["message"]


def test_records_export_writes_json_lines(
    env: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    env.admin.deploy("med/lr@1.0.0", name="exported")
    rows = breast_cancer()[0][:1]
    body = {
        "inputs": [
            {"name": "X", "shape": [1, 30], "datatype": "FP32", "data": rows.ravel().tolist()}
        ]
    }
    env.admin.infer("exported", body)
    capsys.readouterr()
    assert main(["records", "export", "--deployment", "exported", "--since", "2026-01-01"]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines]
    assert records
    assert {r["deployment"] for r in records} == {"exported"}
    assert records[-1]["outcome"] == "ok"
    # --json, as every hub command takes: one document (it was refused as unknown).
    assert main(["records", "export", "--deployment", "exported", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"records": records}
    env.admin.undeploy("exported")
