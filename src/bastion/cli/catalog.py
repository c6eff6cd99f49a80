"""``bastion models ls``, ``bastion versions ls``, ``bastion show``: browse the hub."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bastion.cli._hub import add_hub_options, open_client
from bastion.cli._output import add_json_flag, emit

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = sub.add_parser("models", help="list models")
    m_actions = models.add_subparsers(dest="catalog_action", required=True, metavar="ACTION")
    m_ls = m_actions.add_parser("ls", help="list the models you can read")
    m_ls.set_defaults(what="models")
    versions = sub.add_parser("versions", help="list versions of a model")
    v_actions = versions.add_subparsers(dest="catalog_action", required=True, metavar="ACTION")
    v_ls = v_actions.add_parser("ls", help="list a model's versions")
    v_ls.add_argument("model", help="namespace/model")
    v_ls.set_defaults(what="versions")
    show = sub.add_parser("show", help="one version: state, signers, scan report, files")
    show.add_argument("ref", help="namespace/model@version or namespace/model:alias")
    show.set_defaults(what="show")
    for p in (m_ls, v_ls, show):
        add_hub_options(p)
        add_json_flag(p)
        p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        if args.what == "models":
            rows = client.models()
            text = "\n".join(
                f"{r['name']:<40} {r['versions']:>4} versions  latest {r['latest'] or '-'}"
                for r in rows
            )
            emit(args, {"models": rows}, text or "(none)")
        elif args.what == "versions":
            rows = client.versions(args.model)
            emit(args, {"versions": rows}, "\n".join(_version_line(r) for r in rows) or "(none)")
        else:
            info = client.show(args.ref)
            emit(args, info, _describe(info))
    return 0


def _state(row: dict[str, Any]) -> str:
    return "yanked" if row["yanked"] else row["state"]


def _version_line(row: dict[str, Any]) -> str:
    aliases = f"  ({', '.join(row['aliases'])})" if row["aliases"] else ""
    return f"{row['version']:<20} {_state(row):<12} {row['created_at']}{aliases}"


def _describe(info: dict[str, Any]) -> str:
    lines = [
        f"{info['ref']}: {_state(info)}",
        f"  created {info['created_at']} by {info['created_by']}",
        f"  root digest {info['root_digest'] or '-'}; {len(info['files'])} files, "
        f"{info['size']} bytes",
    ]
    if info["yanked"]:
        lines.append(f"  yanked: {info['yank_reason']}")
    for reason in info["reasons"]:
        lines.append(f"  quarantined: {reason}")
    for signer in info["signers"]:
        lines.append(f"  signed by {signer['name']} ({signer['algorithm']}, {signer['kind']})")
    scan = info.get("scan")
    if scan:
        findings = scan.get("findings", [])
        lines.append(f"  scan: {len(findings)} finding(s), max {scan.get('max_severity') or '-'}")
        for f in findings[:10]:
            lines.append(f"    {f['severity']:<8} {f['rule_id']}: {f['message']}")
    if info["aliases"]:
        lines.append(f"  aliases: {', '.join(info['aliases'])}")
    return "\n".join(lines) if lines else json.dumps(info)
