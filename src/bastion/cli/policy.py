"""``bastion policy check|test``: validate Cedar policies and try a request against them."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion.cli._output import add_json_flag, emit

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
    for q in (check, test):
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
    if args.json:
        print(json.dumps({"ok": not problems, "problems": [str(p) for p in problems]}, indent=2))
    for problem in problems:
        print(f"bastion: {problem}", file=sys.stderr)
    if not problems:
        emit_text = f"{args.directory}: policies valid against the Bastion schema"
        if not args.json:
            print(emit_text)
    return 2 if problems else 0


def run(args: argparse.Namespace) -> int:
    if args.policy_action == "check":
        return _check(args)
    return _test(args)
