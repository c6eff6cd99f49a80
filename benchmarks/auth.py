"""Benchmark what authentication and authorisation add to a request, and the Cedar decision.

Run it with ``make bench``, or ``.venv/bin/python benchmarks/auth.py [--runs N] [--quick]``.

It starts an OpenID Connect provider in this process (``tests/support/oidc_provider``) and
two ``bastion serve --insecure-http`` children on 127.0.0.1 with fresh data folders: *main*,
whose limits never refuse but on model ``bench/limited`` (1 an hour per caller), and
*strict*, with the default limits (20 bad credentials a minute per address). It makes an API
key, a user (enrolled with TOTP, signed in through ``POST /api/v1/sessions``) and RS256 JWTs,
then times, in rounds whose row order rotates, sequential requests over one keep-alive
``httpx.Client`` per hub: ``GET /livez`` (the empty public route, the baseline),
``GET /api/v1/whoami`` with each credential, and refusals before routing; it reads the hub's
CPU time around each row, and times ``PolicyEngine.decide`` in this process. The table goes
to stdout (``--json``: every round's figures instead, also kept in
``.bench/auth-results.json``), progress to stderr. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

import bastion
from _bench import (
    REPO,
    BenchError,
    add_common_options,
    log,
    machine,
    parse_common,
    report_results,
)
from bastion.auth import (
    ROLE_SCOPES,
    PolicyEngine,
    PolicyResource,
    PolicyRole,
    Principal,
    RequestContext,
    totp_code,
)

if str(REPO) not in sys.path:  # benchmarks may reuse the tests' OIDC provider
    sys.path.append(str(REPO))
from tests.support.oidc_provider import AUDIENCE, OidcProvider

__all__ = ["main"]

ADDED_TARGET_US = 300.0  # the "under 0.3 ms added per request for any credential type"
DECISION_TARGET_US = 50.0  # "a decision in under 50 microseconds with pre-parsed policies"
START_TIMEOUT = 60.0
WHOAMI, LIVEZ = "/api/v1/whoami", "/livez"
LIMITED_PATH = "/api/v1/models/bench/limited/versions"
OIDC_GROUP = "bench-team"
HIGH = "1000000000/hour"
MAIN_LIMITS = {"anonymous": HIGH, "principal": HIGH, "login_failure_limit": HIGH}
MAIN_MODELS = {"*": HIGH, "bench/limited": "1/hour"}

Headers = dict[str, str]
Timed = Callable[[], Any]
Case = tuple[str, str, Callable[[int], Timed]]  # key, label, make(round) -> the call to time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads), from ``/proc/PID/stat``."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        stat = fh.read()
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Hub:
    """``bastion serve`` as a child process in its own process group, and a client to it."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    client: httpx.Client

    def stop(self) -> None:
        self.client.close()
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=wait)
                return


def access_config(path: Path, issuer: str, *, strict: bool) -> Path:
    """The hub's access settings (TOML): its rate limits; the provider as its OIDC issuer."""
    lines = []
    if not strict:
        lines += ["[rate_limits]", *(f"{k} = {json.dumps(v)}" for k, v in MAIN_LIMITS.items())]
        lines += ["[rate_limits.models]"]
        lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in MAIN_MODELS.items()]
    lines += ["[[oidc]]", f"issuer = {json.dumps(issuer)}", f"audience = {json.dumps(AUDIENCE)}"]
    lines += [f'roles = {{ {OIDC_GROUP} = "consumer:bench" }}']
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def running_hub(name: str, work: Path, config: Path) -> Iterator[tuple[Hub, str]]:
    """Start ``bastion serve --insecure-http`` on a free loopback port; (hub, admin token)."""
    data, token_file, log_path = work / name, work / f"{name}-admin-token", work / f"{name}.log"
    port = free_port()
    argv = [sys.executable, "-m", "bastion", "serve", "--data-dir", str(data), "--insecure-http"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--admin-token-file", str(token_file)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["BASTION_ACCESS_CONFIG"] = str(config)
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    hub = Hub(name, process, url, httpx.Client(base_url=url, timeout=30.0))
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise BenchError(f"the {name} hub exited while starting:\n{tail}")
            with contextlib.suppress(httpx.TransportError):
                if hub.client.get(LIVEZ).status_code == 200 and token_file.is_file():
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"the {name} hub did not answer {LIVEZ} in {START_TIMEOUT:.0f} s")
            time.sleep(0.1)
        yield hub, token_file.read_text().strip()
    finally:
        hub.stop()


def expect(response: httpx.Response, status: int, what: str) -> Any:
    if response.status_code != status:
        raise BenchError(f"{what}: HTTP {response.status_code}, {response.text[:300]}")
    return response.json()


def bearer(token: str) -> Headers:
    return {"authorization": f"Bearer {token}"}


def make_api_key(hub: Hub, admin: str) -> str:
    body = {"name": "bench-consumer", "roles": [{"namespace": "bench", "role": "consumer"}]}
    made = expect(hub.client.post("/api/v1/api-keys", json=body, headers=bearer(admin)), 201, "key")
    return str(made["token"])


def make_session(hub: Hub, admin: str) -> str:
    """Add a user, enrol it (password + TOTP) and sign in; the session token (``bss_...``)."""
    user, password, post = "bench-user", secrets.token_urlsafe(24), hub.client.post
    body = {"name": user, "roles": [{"namespace": "bench", "role": "consumer"}]}
    code = expect(post("/api/v1/users", json=body, headers=bearer(admin)), 201, "user")[
        "enrolment_code"
    ]
    step = {"enrolment_code": code, "password": password}
    text = expect(post("/api/v1/enrolment/password", json=step), 200, "enrolment")["secret"]
    secret = base64.b32decode(text + "=" * (-len(text) % 8))
    # Enrol with the previous step's code, so that the current step's code signs in (no replay).
    for _ in range(2):
        finish = {"enrolment_code": code, "code": totp_code(secret, int(time.time()) - 30)}
        answer = post("/api/v1/enrolment/totp", json=finish)
        if answer.status_code == 200:
            break
    expect(answer, 200, "enrolment with a TOTP code")
    sign_in = {"user": user, "password": password, "code": totp_code(secret, int(time.time()))}
    token = expect(post("/api/v1/sessions", json=sign_in), 201, "sign-in")["token"]
    hub.client.cookies.clear()  # the session cookie too: every row sends only its own credential
    return str(token)


def mint_tokens(idp: OidcProvider, count: int) -> list[str]:
    """``count`` distinct RS256 tokens (each with its own ``jti``), valid for an hour."""
    claims = idp.claims(now=datetime.now(UTC), lifetime=timedelta(hours=1))
    claims["groups"] = [OIDC_GROUP]
    return [idp.mint(claims | {"jti": secrets.token_hex(8)}) for _ in range(count)]


def unknown_key() -> str:
    """An API key of the right shape whose id the hub does not know."""
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(16))
    return f"bst_{key_id}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class Row:
    """One kind of request, repeated: where it goes, what it must get, how it is judged."""

    key: str
    label: str
    kind: str  # "baseline", "served" (target: added time) or "refused" (target: vs served)
    headers: Callable[[int], list[Headers]]  # the headers of ``n`` requests
    status: int = 200
    hub: str = "main"
    path: str = WHOAMI
    prepare: Callable[[httpx.Client], None] | None = None
    tolerate: float = 0.0  # share of answers with another status dropped (blocked address)


def same(headers: Headers) -> Callable[[int], list[Headers]]:
    return lambda n: [headers] * n


def block_address(client: httpx.Client) -> None:
    """Send unknown keys until the address is refused before its credential is read."""
    for _ in range(200):
        if client.get(WHOAMI, headers=bearer(unknown_key())).status_code == 429:
            return
    raise BenchError("200 bad keys did not block the address on the strict hub")


def http_rows(key: str, session: str, idp: OidcProvider) -> list[Row]:
    jwt, bad = mint_tokens(idp, 1)[0], bearer(unknown_key())

    def fresh_jwts(n: int) -> list[Headers]:
        return [bearer(token) for token in mint_tokens(idp, n)]

    def over_limit(client: httpx.Client) -> None:  # spend the key's 1 an hour on the model
        client.get(LIMITED_PATH, headers=bearer(key))

    return [
        Row("livez", "GET /livez, public (baseline)", "baseline", same({}), path=LIVEZ),
        Row("api_key", "whoami, API key", "served", same(bearer(key))),
        Row("session", "whoami, session (bss_)", "served", same(bearer(session))),
        Row("oidc", "whoami, OIDC JWT (same token)", "served", same(bearer(jwt))),
        Row("oidc_fresh", "whoami, OIDC JWT (new each time)", "served", fresh_jwts),
        Row("bad_key", "unknown API key", "refused", same(bad), 401),
        Row("missing", "no credential", "refused", same({}), 401),
        Row("malformed", "malformed token", "refused", same(bearer("bst_x")), 401),
        Row("over_limit", "over its limit (per model)", "refused", same(bearer(key)), 429,
            path=LIMITED_PATH, prepare=over_limit),
        Row("blocked", "unknown key, address blocked", "refused", same(bad), 429,
            hub="strict", prepare=block_address, tolerate=0.05),
    ]  # fmt: skip


@dataclass
class Sample:
    """One row in one round: latencies (ns) of the answers with the expected status."""

    nanos: list[int]
    cpu_seconds: float
    requests: int
    dropped: int

    @property
    def p50(self) -> float:
        return statistics.median(self.nanos) / 1000

    @property
    def p99(self) -> float:
        ordered = sorted(self.nanos)
        return ordered[math.ceil(0.99 * len(ordered)) - 1] / 1000

    @property
    def cpu_us(self) -> float:
        return self.cpu_seconds / self.requests * 1e6


def time_row(hub: Hub, row: Row, requests: int, warmup: int) -> Sample:
    client, path = hub.client, row.path
    if row.prepare is not None:
        row.prepare(client)
    headers = row.headers(warmup + requests)
    for h in headers[:warmup]:
        client.get(path, headers=h)
    nanos: list[int] = []
    dropped, last = 0, None
    clock = time.perf_counter_ns
    before = cpu_seconds(hub.process.pid)
    for h in headers[warmup:]:
        start = clock()
        response = client.get(path, headers=h)
        elapsed = clock() - start
        if response.status_code == row.status:
            nanos.append(elapsed)
        else:
            dropped, last = dropped + 1, response
    used = cpu_seconds(hub.process.pid) - before
    if last is not None and dropped > row.tolerate * requests:
        raise BenchError(
            f"{row.label}: {dropped} of {requests} answers were not HTTP {row.status}, e.g. "
            f"{last.status_code} {last.text[:200]}"
        )
    return Sample(nanos, used, requests, dropped)


def cedar_cases(calls: int) -> list[Case]:
    """(key, label, make): ``make(round)`` is the call to time, ``calls`` times at most."""
    engine, hub = PolicyEngine.default(), PolicyResource.hub()
    roles: tuple[tuple[str, PolicyRole], ...] = (("bench", "publisher"),)
    scope = ROLE_SCOPES["publisher"]
    who = Principal("ServiceAccount", "benchpublisher01", "publisher", "api_key", roles, (), scope)
    version, at = PolicyResource.of_version("bench", "weights", "1.0.0"), datetime.now(UTC)
    context = RequestContext(source_ip="127.0.0.1", time=at, auth_method="api_key")
    policy = who.for_policy()

    def fresh_contexts(action: str, resource: PolicyResource) -> Callable[[int], Timed]:
        """Every call a request not seen before (another source address): evaluated by Cedar."""

        def make(round_: int) -> Timed:
            built = iter(  # made before timing: only the decision is timed
                [
                    RequestContext(f"10.{round_ & 255}.{i >> 8 & 255}.{i & 255}", at, "api_key")
                    for i in range(calls)
                ]
            )
            return lambda: engine.decide(policy, action, resource, next(built))

        return make

    def uncached(round_: int) -> Timed:  # an engine per round: a full cache slows every decision
        fresh, names = PolicyEngine.default(), [f"{round_}.{i}" for i in range(calls)]
        versions = iter([PolicyResource.of_version("bench", "w", name) for name in names])
        return lambda: fresh.decide(policy, "version.pull", next(versions), context)

    def with_context() -> Any:  # what a route does per request: build the context, decide
        built = RequestContext("127.0.0.1", datetime.now(UTC), who.auth_method, who.mfa_age(at))
        return engine.decide(who.for_policy(), "version.pull", version, built)

    return [
        ("cedar_pull", "decide: pull a version (new)", fresh_contexts("version.pull", version)),
        ("cedar_whoami", "decide: whoami (Hub, new)", fresh_contexts("whoami", hub)),
        ("cedar_uncached", "decide: pull, entities not cached", uncached),
        ("cedar_repeat", "decide: the same request again",
         lambda _: lambda: engine.decide(policy, "version.pull", version, context)),
        ("cedar_context", "context + decide (as a route)", lambda _: with_context),
    ]  # fmt: skip


def time_decisions(call: Timed, iterations: int, warmup: int) -> Sample:
    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    nanos = []
    for _ in range(iterations):
        start = clock()
        decision = call()
        nanos.append(clock() - start)
    if not decision.allowed:
        raise BenchError(f"the policies denied the benchmark's request: {decision.to_dict()}")
    return Sample(nanos, 0.0, iterations, 0)


med = statistics.median


#: The Cedar cases the decision target applies to: new requests on pre-parsed policies and
#: entities, and what a route pays. Building a new resource's entities and answering a
#: repeated request are shown for what they cost, without a target.
DECISION_TARGETED = frozenset({"cedar_pull", "cedar_whoami", "cedar_context"})


def report(rows: list[Row], cases: list[Case], rounds: list[dict[str, Sample]]) -> list[str]:
    """The table: medians over the rounds; added and ratios are paired within each round."""
    served = med([s["api_key"].p50 for s in rounds])
    columns = ("row", "status", "p50 µs", "p99 µs", "added µs", "CPU µs", "target")
    lines = ["{:<40} {:>6} {:>8} {:>8} {:>9} {:>7}  {:<26} verdict".format(*columns)]
    for r in rows:
        p50, p99 = med([s[r.key].p50 for s in rounds]), med([s[r.key].p99 for s in rounds])
        cpu = med([s[r.key].cpu_us for s in rounds])
        added = med([s[r.key].p50 - s["livez"].p50 for s in rounds])
        ratio = med([s[r.key].p50 / s["api_key"].p50 for s in rounds])
        target, verdict, shown = "-", "", f"{added:.0f}"
        if r.kind == "baseline":
            shown = "-"
        elif r.kind == "served":
            target = f"added < {ADDED_TARGET_US:.0f} µs"
            verdict = "met" if added < ADDED_TARGET_US else "MISSED"
        else:
            target = f"< served key ({served:.0f} µs)"
            verdict = f"{'met' if ratio < 1 else 'MISSED'} ({ratio:.2f}x)"
        lines.append(
            f"{r.label:<40} {r.status:>6} {p50:>8.0f} {p99:>8.0f} {shown:>9} {cpu:>7.0f}  "
            f"{target:<26} {verdict}".rstrip()
        )
    lines.append("")
    for key, label, _ in cases:
        p50, p99 = med([s[key].p50 for s in rounds]), med([s[key].p99 for s in rounds])
        target, verdict = "-", ""
        if key in DECISION_TARGETED:  # a decision with pre-parsed policies and entities
            target = f"p50 < {DECISION_TARGET_US:.0f} µs"
            verdict = "met" if p50 < DECISION_TARGET_US else "MISSED"
        lines.append(
            f"{'Cedar ' + label:<40} {'-':>6} {p50:>8.1f} {p99:>8.1f} {'-':>9} {'-':>7}  "
            f"{target:<26} {verdict}".rstrip()
        )
    return lines


def header(args: argparse.Namespace, load: tuple[float, float]) -> list[str]:
    commit = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%h, %cs"],
        capture_output=True, text=True, check=False,
    ).stdout.strip() or "not a git checkout"  # fmt: skip
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("uvicorn", "httpx", "cedarpy"))
    return [
        f"Bastion access benchmark, {date.today().isoformat()}",
        f"machine: {machine()}; 1-minute load average {load[0]:.2f} before, {load[1]:.2f} after",
        f"bastion {bastion.__version__} (commit {commit}; working tree as found), {versions}",
        f"medians of {args.runs} round(s); per row and round {args.requests} sequential "
        f"requests over one keep-alive httpx.Client after {args.warmup} untimed; row order "
        "rotates each round",
        "hubs: bastion serve --insecure-http on 127.0.0.1, SQLite, its default settings; main: "
        "limits that never refuse (bench/limited: 1/hour per caller), strict: default limits",
        "p50/p99: client-side latency of one request; added: p50 minus /livez's p50 in the "
        "same round; CPU: the hub process's user+system time per request (/proc, 10 ms ticks)",
        f"Cedar: PolicyEngine.default().decide in this process, {args.decisions} calls per "
        f"case and round after {args.decisions // 10} untimed, each timed alone",
    ]


def to_json(head: list[str], table: list[str], rounds: list[dict[str, Sample]]) -> dict[str, Any]:
    def sample(s: Sample) -> dict[str, Any]:
        figures = (s.p50, s.p99, s.cpu_us, len(s.nanos), s.dropped)
        return dict(
            zip(("p50_us", "p99_us", "server_cpu_us", "timed", "dropped"), figures, strict=True)
        )

    rows = [{key: sample(s) for key, s in r.items()} for r in rounds]
    return {"header": head, "table": table, "rounds": rows}


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks that stop the hubs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_options(parser, default_runs=5, quick_help="300 requests per row and 1 round")
    parser.add_argument("--requests", type=int, help="timed requests per row and round (2000)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parse_common(parser, argv)
    args.requests = args.requests or (300 if args.quick else 2000)
    args.warmup = max(20, args.requests // 10)
    args.decisions = 2000 if args.quick else 20000
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args, args.scratch.resolve())
    except BenchError as exc:
        log(f"failed: {exc}")
        return 1


def run(args: argparse.Namespace, scratch: Path) -> int:
    work = scratch / "auth-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, mode=0o700)
    load_before = os.getloadavg()[0]
    try:
        with OidcProvider(algorithms=("RS256",)) as idp:
            main_config = access_config(work / "main.toml", idp.issuer, strict=False)
            strict_config = access_config(work / "strict.toml", idp.issuer, strict=True)
            with (
                running_hub("main", work, main_config) as (main, admin),
                running_hub("strict", work, strict_config) as (strict, _),
            ):
                rows, cases, rounds = measure(args, idp, {"main": main, "strict": strict}, admin)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    head = header(args, (load_before, os.getloadavg()[0]))
    table = report(rows, cases, rounds)
    document = to_json(head, table, rounds)
    report_results(scratch, "auth", document, head, table, as_json=args.json)
    return 0


def measure(
    args: argparse.Namespace, idp: OidcProvider, hubs: dict[str, Hub], admin: str
) -> tuple[list[Row], list[Case], list[dict[str, Sample]]]:
    """The rows, the Cedar cases, and each round's figures (rows in rotating order, then cases)."""
    main = hubs["main"]
    log(f"hubs up: main {main.url}, strict {hubs['strict'].url}; making credentials")
    rows = http_rows(make_api_key(main, admin), make_session(main, admin), idp)
    cases = cedar_cases(args.decisions + args.decisions // 10)
    rounds: list[dict[str, Sample]] = []
    for number in range(args.runs):
        log(f"round {number + 1} of {args.runs}")
        shift = number % len(rows)
        result: dict[str, Sample] = {}
        for row in rows[shift:] + rows[:shift]:
            result[row.key] = time_row(hubs[row.hub], row, args.requests, args.warmup)
            log(f"  {row.label}: p50 {result[row.key].p50:.0f} µs")
        for key, label, make in cases:
            result[key] = time_decisions(make(number), args.decisions, args.decisions // 10)
            log(f"  Cedar {label}: p50 {result[key].p50:.1f} µs")
        rounds.append(result)
    return rows, cases, rounds


if __name__ == "__main__":
    sys.exit(main())
