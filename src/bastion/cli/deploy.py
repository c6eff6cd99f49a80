"""``bastion deploy``: serve hub versions (or front an upstream server) behind the gateway."""

from __future__ import annotations

import argparse
from typing import Any

from bastion.cli._hub import add_hub_options, open_client
from bastion.cli._output import add_json_flag, emit
from bastion.errors import UsageError
from bastion.serving._deployment_config import parse_value_ranges

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "deploy",
        help="serve hub versions at /v2/models/NAME (verified and scanned first)",
        description=(
            "Deploy one version, or several as a pool (--switch) or an ensemble (--ensemble); "
            "add a candidate to an existing deployment with --canary or --shadow; or front "
            "an existing Open Inference Protocol server with --upstream."
        ),
    )
    p.add_argument(
        "refs",
        nargs="?",
        default="",
        help="ns/model@version (or ns/model:alias); several separated by commas",
    )
    p.add_argument("--name", required=True, help="the deployment's name (/v2/models/NAME)")
    arm = p.add_mutually_exclusive_group()
    arm.add_argument("--canary", type=float, metavar="PERCENT", help="send PERCENT%% of callers")
    arm.add_argument("--shadow", action="store_true", help="mirror traffic; discard answers")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--ensemble", choices=("vote", "mean"), help="combine every version")
    group.add_argument("--switch", choices=("random", "weighted"), help="one version per call")
    p.add_argument("--weights", help="with --switch weighted: one weight per version, e.g. 3,1")
    p.add_argument(
        "--output",
        action="append",
        metavar="[TIER=]POLICY",
        help="output policy, e.g. top-k=3,round=2 or partners=label (repeatable per tier)",
    )
    p.add_argument("--ranges", help="input value ranges, e.g. input=0:1")
    p.add_argument("--max-batch", type=int, help="largest batch a call may send")
    p.add_argument("--upstream", metavar="URL", help="front this OIP server instead")
    p.add_argument("--upstream-model", help="the model's name on the upstream server")
    p.add_argument("--namespace", help="the namespace an upstream deployment belongs to")
    add_hub_options(p)
    add_json_flag(p)
    p.set_defaults(run=run)


_TIERED = ("top-k", "full", "label", "round", "noise")


def _outputs(values: list[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    tiers: dict[str, str] = {}
    for value in values:
        tier, sep, policy = value.partition("=")
        if sep and not tier.startswith(_TIERED):
            tiers[tier] = policy
        else:
            tiers["default"] = value
    return tiers


def run(args: argparse.Namespace) -> int:
    refs = [r.strip() for r in args.refs.split(",") if r.strip()]
    if args.upstream is None and not refs:
        raise UsageError("name the version(s) to deploy, or --upstream URL")
    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise UsageError("--weights: numbers separated by commas, e.g. 3,1") from None
    with open_client(args) as client:
        row = client.deploy(
            refs,
            name=args.name,
            canary=args.canary,
            shadow=args.shadow,
            ensemble=args.ensemble,
            switch=args.switch,
            weights=weights,
            output=_outputs(args.output),
            value_ranges=parse_value_ranges(args.ranges) if args.ranges else None,
            max_batch=args.max_batch,
            upstream=args.upstream,
            upstream_model=args.upstream_model,
            namespace=args.namespace,
        )
    emit(args, row, describe(row))
    return 0


def describe(row: dict[str, Any]) -> str:
    """One deployment in a few human lines."""
    plan = row.get("plan")
    if plan is None:
        upstream = row["config"]["upstream"]
        serves = f"upstream {upstream['model']} at {upstream['url']}"
    else:
        serves = ", ".join(plan["stable"])
        if plan.get("mode", "single") != "single":
            serves = f"{plan['mode']} ({plan.get('method')}) of {serves}"
        if plan.get("candidate"):
            share = (
                "shadow"
                if plan.get("candidate_mode") == "shadow"
                else f"canary {plan.get('canary_percent')}%"
            )
            serves += f"; {share}: {plan['candidate']}"
    output = ", ".join(f"{t}={p}" for t, p in row["config"]["output"].items())
    return (
        f"{row['name']} (revision {row['revision']}, namespace {row['namespace']}): {serves}\n"
        f"  output: {output}"
    )
