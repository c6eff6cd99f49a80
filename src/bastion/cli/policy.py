"""``bastion policy check|test|apply|show|history``: Cedar policies, locally and on the hub.

``check`` and ``test`` work on files; ``apply`` checks a folder locally first (nothing is
sent if any file has a problem), then makes it the hub's new policy version; ``show``
prints the version in force (``--out DIR`` writes its files), ``history`` every version.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion.cli._hub import add_hub_options, open_client
from bastion.cli._output import add_json_flag, emit, note

__all__ = ["add_parser", "run"]

_KINDS = {"user": "User", "key": "ServiceAccount", "oidc": "OidcSubject"}
_AUTH: dict[str, Any] = {"User": "password", "ServiceAccount": "api_key", "OidcSubject": "oidc"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("policy", help="check Cedar authorisation policies and try requests")
    actions = p.add_subparsers(dest="policy_action", required=True, metavar="ACTION")
    check = actions.add_parser("check", help="validate a folder of .cedar files (exit 0 or 2)")
    check.add_argument("directory", type=Path)
    test = actions.add_parser("test", help="decide one request and show the deciding policies")
    test.add_argument(
        "--principal", required=True, help="NAME (a user), user:NAME, key:ID or oidc:SUBJECT"
    )
    test.add_argument(
        "--role",
        action="append",
        default=[],
        metavar="ROLE@NAMESPACE",
        help="a role the principal holds, e.g. publisher@med or admin@*; repeatable",
    )
    test.add_argument("--group", action="append", default=[], help="a group; repeatable")
    test.add_argument(
        "--scope",
        action="append",
        default=[],
        help="an action or action group an API key may use; repeatable",
    )
    test.add_argument("--issuer", default="", help="OIDC issuer (oidc: principals)")
    test.add_argument("--action", required=True, help="e.g. version.pull (or just pull)")
    test.add_argument(
        "--resource",
        required=True,
        help="hub, audit, policy:NAME, deployment:NS/NAME, NS, NS/MODEL, NS/MODEL@V",
    )
    test.add_argument("--classification", default="internal")
    test.add_argument("--scan-verdict", default="clean")
    test.add_argument("--yanked", action="store_true")
    test.add_argument(
        "--context",
        default="{}",
        metavar="JSON",
        help="source_ip, time, auth_method, mfa_age_seconds, allow_yanked",
    )
    test.add_argument("--policies", type=Path, metavar="DIR", help="default: Bastion's own")
    apply = actions.add_parser(
        "apply", help="check a folder of .cedar files, then make it the hub's policies"
    )
    apply.add_argument("directory", type=Path)
    apply.add_argument("--comment", default="", help="why (kept in the policy history)")
    show = actions.add_parser("show", help="the policy version in force on the hub")
    show.add_argument("--out", type=Path, metavar="DIR", help="write its files into DIR (new)")
    history = actions.add_parser("history", help="every policy version applied on the hub")
    for q in (apply, show, history):
        add_hub_options(q)
    for q in (check, test, apply, show, history):
        add_json_flag(q)
        q.set_defaults(run=run)


def _action(name: str) -> str:
    from bastion.auth._policy_schema import ACTIONS
    from bastion.errors import UsageError

    if name in ACTIONS:
        return name
    matches = [a for a in ACTIONS if a.rsplit(".", 1)[-1] == name]
    if len(matches) != 1:
        raise UsageError(f"--action {name!r}: use one of {', '.join(ACTIONS)}")
    return matches[0]


def _principal(args: argparse.Namespace) -> Any:
    from bastion.auth._policy_schema import PolicyPrincipal
    from bastion.errors import UsageError

    prefix, sep, ident = args.principal.partition(":")
    kind = _KINDS.get(prefix) if sep else "User"
    if kind is None:
        raise UsageError(f"--principal {args.principal!r}: prefix with user:, key: or oidc:")
    roles = []
    for binding in args.role:
        role, at, namespace = binding.partition("@")
        if not at:
            raise UsageError(f"--role {binding!r}: write ROLE@NAMESPACE, e.g. publisher@med")
        roles.append((namespace, role))
    return PolicyPrincipal(
        kind,  # type: ignore[arg-type]
        ident if sep else args.principal,
        roles=tuple(roles),
        groups=tuple(args.group),
        scope=tuple(args.scope),
        issuer=args.issuer,
    )


def _test(args: argparse.Namespace) -> int:
    from bastion.auth._policy import PolicyEngine
    from bastion.auth._policy_schema import PolicyResource, RequestContext
    from bastion.errors import InputError

    principal = _principal(args)
    action = _action(args.action)
    attrs = {"classification": args.classification, "scan_verdict": args.scan_verdict}
    resource = PolicyResource.parse(args.resource, **attrs, yanked=args.yanked)
    try:
        raw = json.loads(args.context)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"--context is not JSON: {exc}") from exc
    defaults = RequestContext("127.0.0.1", datetime.now(UTC), _AUTH[principal.kind])
    context = RequestContext.from_dict(raw, defaults=defaults)
    engine = PolicyEngine.default() if args.policies is None else None
    if engine is None:
        engine = PolicyEngine.from_directory(args.policies)
    decision = engine.decide(principal, action, resource, context)
    verdict = "ALLOW" if decision.allowed else "DENY"
    why = ", ".join(decision.reasons) or "no policy permits (deny by default)"
    text = f"{verdict} {action} on {resource.kind} {resource.id!r}: {why}"
    for error in decision.errors:
        text += f"\nerror: {error}"
    emit(args, {"action": action, "resource": resource.id, **decision.to_dict()}, text)
    return 0 if decision.allowed else 1


def _check(args: argparse.Namespace) -> int:
    from bastion.auth._policy import check_policies

    problems = check_policies(args.directory)
    if problems:
        return _refuse(args, problems, "fix them and check again")
    emit(
        args,
        {"ok": True, "problems": []},
        f"{args.directory}: policies valid against the Bastion schema",
    )
    return 0


def _refuse(args: argparse.Namespace, problems: Sequence[object], what_to_do: str) -> int:
    """List ``problems`` on stderr, then fail as every command does (with them in the JSON)."""
    from bastion.errors import PolicyError

    for problem in problems:
        print(f"bastion: {problem}", file=sys.stderr)
    refused = PolicyError(f"{len(problems)} problem(s) in {args.directory}; {what_to_do}")
    note(f"bastion: error [{refused.code}]: {refused.message}")
    if args.json:
        shown = [str(p) for p in problems]
        document = {"ok": False, "error": refused.to_dict(), "problems": shown}
        print(json.dumps(document, indent=2))
    return refused.exit_code


def _apply(args: argparse.Namespace) -> int:
    from bastion.auth._policy import _read_directory, check_policies
    from bastion.errors import PolicyError

    problems = check_policies(args.directory)
    if problems:
        return _refuse(
            args,
            problems,
            "nothing was applied: fix them (bastion policy check lists them) and apply again",
        )
    sources, _ = _read_directory(args.directory)
    if not sources:
        raise PolicyError(f"{args.directory} holds no .cedar files; nothing would be allowed")
    files = {Path(source.name).name: source.text for source in sources}
    with open_client(args) as client:
        result = client.apply_policies(files, comment=args.comment)
    emit(
        args,
        {"ok": True, **result},
        f"policy version {result['version']} in force ({len(result['files'])} files, "
        f"{result['policies']} policies); digest {result['digest']}",
    )
    return 0


def _write_files(out: Path, files: dict[str, str]) -> None:
    from bastion.errors import ConflictError, InputError

    names = [Path(name).name for name in files]
    if len(set(names)) != len(names) or any(n in ("", ".", "..") for n in names):
        raise InputError("the hub's policy file names cannot be written as one folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConflictError(f"{out} exists and is not an empty folder; give a new --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in zip(names, files.values(), strict=True):
            with (out / name).open("x", encoding="utf-8") as handle:
                handle.write(text)
    except FileExistsError as exc:
        raise ConflictError(f"{exc.filename} appeared meanwhile; give a new --out") from exc
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "a file name is not valid"
        raise InputError(f"cannot write the policies into {out}: {reason}") from exc


def _show(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        current = client.policies()
    if args.out is not None:
        _write_files(args.out, current["files"])
    applied = current["applied_at"] or "built in"
    text = (
        f"policy version {current['version']} ({applied}, by {current['applied_by']}); "
        f"digest {current['digest']}\nfiles: {', '.join(sorted(current['files']))}"
    )
    if args.out is not None:
        text += f"\nwritten into {args.out}"
    if current["comment"]:
        text += f"\ncomment: {current['comment']}"
    document = {**current, "written_to": None if args.out is None else str(args.out)}
    emit(args, document, text)
    return 0


def _history(args: argparse.Namespace) -> int:
    with open_client(args) as client:
        versions = client.policy_history()
    text = "\n".join(
        f"{v['version']:>4}  {v['applied_at']}  {v['applied_by']:<24} {v['digest'][:16]}  "
        f"{v['comment']}".rstrip()
        for v in versions
    )
    emit(args, {"versions": versions}, text or "(none: the built-in defaults are in force)")
    return 0


def run(args: argparse.Namespace) -> int:
    handlers = {"check": _check, "test": _test, "apply": _apply, "show": _show}
    return handlers.get(args.policy_action, _history)(args)
