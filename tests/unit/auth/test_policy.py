"""Cedar authorisation policy: default roles, guards, validation of policy files, the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.auth._policy import MAX_NESTING, PolicyEngine, PolicySource, check_policies
from bastion.auth._policy_schema import (
    ACTIONS,
    POLICY_ROLES,
    PolicyPrincipal,
    PolicyResource,
    PolicyRole,
    RequestContext,
)
from bastion.cli import main
from bastion.errors import BastionError, InputError

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
FRESH = RequestContext("10.0.0.7", NOW, "password", mfa_age_seconds=60)
STALE = RequestContext("10.0.0.7", NOW, "password", mfa_age_seconds=901)
NO_MFA = RequestContext("10.0.0.7", NOW, "password")

ANYONE = "admin publisher deployer consumer invoker auditor"
BROWSE = "admin publisher deployer consumer"
#: Every action -> the roles (granted on every namespace) that may do it. A new action in the
#: schema without a row here fails test_the_matrix_covers_every_action.
EXPECTED: dict[str, str] = {
    "whoami": ANYONE,
    "openapi": ANYONE,
    "namespace.list": ANYONE,
    "namespace.create": "admin",
    "apikey.create": "admin",
    "apikey.list": "admin",
    "apikey.revoke": "admin",
    "apikey.rotate": "admin",
    "kek.rotate": "admin",
    "session.mfa": ANYONE,
    "session.delete": ANYONE,
    "user.list": "admin",
    "user.create": "admin",
    "user.update": "admin",
    "user.delete": "admin",
    "user.reset": "admin",
    "user.unlock": "admin",
    "namespace.show": BROWSE,
    "namespace.trust": "admin",
    "model.list": BROWSE,
    "version.list": BROWSE,
    "version.push": "admin publisher",
    "model.classify": "admin",
    "alias.show": BROWSE,
    "alias.set": "admin publisher",
    "alias.delete": "admin publisher",
    "upload.file": "admin publisher",
    "upload.commit": "admin publisher",
    "upload.abort": "admin publisher",
    "version.show": BROWSE,
    "version.pull": "admin publisher consumer",
    "version.yank": "admin publisher",
    "deploy": "admin deployer",
    "invoke": "admin invoker",
    "gateway.status": ANYONE,
    "deployment.list": ANYONE,
    "deployment.show": BROWSE,
    "deployment.manage": "admin deployer",
    "gateway.metrics": "admin auditor",
    "inference.records": "admin auditor",
    "audit.export": "admin auditor",
    "audit.checkpoints": "admin auditor",
    "audit.checkpoint": "admin auditor",
    "audit.key": "admin auditor",
    "policy.show": "admin auditor",
    "policy.history": "admin auditor",
    "policy.apply": "admin",
}
SENSITIVE = (
    "version.push",
    "deploy",
    "deployment.manage",
    "namespace.trust",
    "policy.apply",
    "kek.rotate",
    "apikey.create",
    "apikey.revoke",
    "apikey.rotate",
    "model.classify",
    "user.create",
    "user.update",
    "user.delete",
    "user.reset",
    "user.unlock",
)


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine.default()


def resource_for(action: str, namespace: str = "med") -> PolicyResource:
    kind = ACTIONS[action]
    return {
        "Hub": PolicyResource.hub(),
        "AuditLog": PolicyResource.audit_log(),
        "Policy": PolicyResource.policy(),
        "Namespace": PolicyResource.of_namespace(namespace),
        "Model": PolicyResource.model(namespace, "xray"),
        "Version": PolicyResource.of_version(namespace, "xray", "1.2.0"),
        "Deployment": PolicyResource.deployment(namespace, "xray-prod"),
    }[kind]


def user(*roles: tuple[str, PolicyRole]) -> PolicyPrincipal:
    return PolicyPrincipal("User", "alice", roles=roles)


def test_the_matrix_covers_every_action() -> None:
    assert set(EXPECTED) == set(ACTIONS)


def test_every_action_exists_in_the_schema_with_its_resource_type() -> None:
    text = "\n".join(
        f'permit (principal, action == Bastion::Action::"{a}", resource is Bastion::{k});'
        for a, k in ACTIONS.items()
    )
    assert len(PolicyEngine([PolicySource("all.cedar", text)]).policy_ids) == len(ACTIONS)
    with pytest.raises(InputError, match=r"all\.cedar:1"):
        PolicyEngine([PolicySource("all.cedar", text.replace('"whoami"', '"nosuch"'))])


@pytest.mark.parametrize("action", sorted(EXPECTED))
@pytest.mark.parametrize("role", POLICY_ROLES)
def test_role_action_matrix(engine: PolicyEngine, role: PolicyRole, action: str) -> None:
    decision = engine.decide(user(("*", role)), action, resource_for(action), FRESH)
    assert decision.allowed is (role in EXPECTED[action].split()), decision
    assert decision.errors == ()
    if decision.allowed:
        assert decision.reasons


@pytest.mark.parametrize("action", sorted(EXPECTED))
def test_no_role_allows_only_what_any_caller_may_do(engine: PolicyEngine, action: str) -> None:
    decision = engine.decide(user(), action, resource_for(action), FRESH)
    assert decision.allowed is (EXPECTED[action] == ANYONE)


@pytest.mark.parametrize("action", [a for a, k in ACTIONS.items() if k != "Hub"])
def test_roles_are_scoped_to_their_namespaces(engine: PolicyEngine, action: str) -> None:
    admin_of_med = user(("med", "admin"))
    other = engine.decide(admin_of_med, action, resource_for(action, "other"), FRESH)
    assert not other.allowed
    inside = engine.decide(admin_of_med, action, resource_for(action, "med"), FRESH)
    assert inside.allowed is (ACTIONS[action] not in ("AuditLog", "Policy"))


def test_a_namespace_admin_cannot_administer_the_hub(engine: PolicyEngine) -> None:
    for action in ("namespace.create", "kek.rotate", "apikey.create", "apikey.list"):
        assert not engine.decide(
            user(("med", "admin")), action, resource_for(action), FRESH
        ).allowed


@pytest.mark.parametrize("action", SENSITIVE)
def test_sensitive_actions_need_a_recent_mfa(engine: PolicyEngine, action: str) -> None:
    admin = user(("*", "admin"))
    resource = resource_for(action)
    assert engine.decide(admin, action, resource, FRESH).allowed
    edge = RequestContext("10.0.0.7", NOW, "password", mfa_age_seconds=900)
    assert engine.decide(admin, action, resource, edge).allowed
    for context in (STALE, NO_MFA):
        decision = engine.decide(admin, action, resource, context)
        assert not decision.allowed
        assert decision.reasons == ("guard.step-up",)
    oidc = PolicyPrincipal("OidcSubject", "sub-1", roles=(("*", "admin"),), issuer="https://idp")
    assert not engine.decide(oidc, action, resource, NO_MFA).allowed


def test_non_sensitive_actions_need_no_mfa(engine: PolicyEngine) -> None:
    decision = engine.decide(
        user(("med", "consumer")), "version.pull", resource_for("version.pull"), NO_MFA
    )
    assert decision.allowed
    assert decision.reasons == ("role.consumer",)


def test_an_api_key_needs_the_sensitive_action_in_its_explicit_scope(engine: PolicyEngine) -> None:
    ctx = RequestContext("10.0.0.7", NOW, "api_key")
    model = resource_for("version.push")
    grouped = PolicyPrincipal(
        "ServiceAccount", "ci", roles=(("med", "publisher"),), scope=("publish",)
    )
    assert engine.decide(grouped, "upload.file", model, ctx).allowed
    assert engine.decide(grouped, "version.push", model, ctx).reasons == ("guard.step-up",)
    explicit = PolicyPrincipal(
        "ServiceAccount", "ci", roles=(("med", "publisher"),), scope=("publish", "version.push")
    )
    assert engine.decide(explicit, "version.push", model, ctx).allowed
    # the scope limits the key, however broad its role
    assert engine.decide(explicit, "version.pull", resource_for("version.pull"), ctx).reasons == (
        "guard.key-scope",
    )
    assert engine.decide(explicit, "whoami", PolicyResource.hub(), ctx).allowed
    # a scope grants nothing without a role
    bare = PolicyPrincipal("ServiceAccount", "ci", scope=("version.push",))
    assert not engine.decide(bare, "version.push", model, ctx).allowed


@pytest.mark.parametrize("verdict", ["quarantined", "pending", "Clean", ""])
@pytest.mark.parametrize("action", ["version.pull", "deploy"])
def test_versions_that_are_not_clean_are_never_served(
    engine: PolicyEngine, verdict: str, action: str
) -> None:
    if not verdict:
        with pytest.raises(InputError):
            PolicyResource.of_version("med", "xray", "1", scan_verdict=verdict)
        return
    version = PolicyResource.of_version("med", "xray", "1", scan_verdict=verdict)
    decision = engine.decide(user(("*", "admin")), action, version, FRESH)
    assert not decision.allowed
    assert "guard.quarantine" in decision.reasons
    assert engine.decide(user(("*", "admin")), "version.show", version, FRESH).allowed


def test_yanked_versions_need_an_explicit_flag_and_are_never_deployed(
    engine: PolicyEngine,
) -> None:
    yanked = PolicyResource.of_version("med", "xray", "1", yanked=True)
    consumer = user(("med", "consumer"), ("med", "deployer"))
    assert engine.decide(consumer, "version.pull", yanked, FRESH).reasons == ("guard.yanked-pull",)
    allow = RequestContext("10.0.0.7", NOW, "password", mfa_age_seconds=60, allow_yanked=True)
    assert engine.decide(consumer, "version.pull", yanked, allow).allowed
    assert not engine.decide(consumer, "deploy", yanked, allow).allowed


def test_a_mismatched_or_unknown_action_is_denied_with_an_error(engine: PolicyEngine) -> None:
    admin = user(("*", "admin"))
    decision = engine.decide(admin, "version.pull", PolicyResource.hub(), FRESH)
    assert not decision.allowed
    assert decision.errors
    assert not engine.decide(admin, "drop.tables", PolicyResource.hub(), FRESH).allowed


def test_resource_references_parse() -> None:
    assert PolicyResource.parse("med/xray@1.2.0").id == "med/xray@1.2.0"
    assert PolicyResource.parse("med/xray").kind == "Model"
    assert PolicyResource.parse("med").kind == "Namespace"
    assert PolicyResource.parse("deployment:med/p").kind == "Deployment"
    assert PolicyResource.parse("audit").kind == "AuditLog"
    with pytest.raises(InputError):
        PolicyResource.parse("deployment:nameonly")


def write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / name).write_text(text)
    return tmp_path


def test_a_parse_error_names_its_file_and_line(tmp_path: Path) -> None:
    good = 'permit (principal, action == Bastion::Action::"whoami", resource);\n'
    write(tmp_path, "a.cedar", "// roles\n" + good + "\n\npermit (principal, action, resource\n")
    problems = check_policies(tmp_path)
    assert [(Path(p.path).name, p.line) for p in problems] == [("a.cedar", 5)]


def test_a_schema_error_names_its_file_and_line(tmp_path: Path) -> None:
    text = (
        'permit (principal, action == Bastion::Action::"whoami", resource);\n'
        "\n"
        '@id("bad")\n'
        'permit (principal, action == Bastion::Action::"version.pull", resource)\n'
        'when { resource.colour == "red" };\n'
    )
    write(tmp_path, "b.cedar", text)
    problems = check_policies(tmp_path)
    assert problems
    assert {(Path(p.path).name, p.line) for p in problems} == {("b.cedar", 3)}
    assert "colour" in problems[0].message
    with pytest.raises(InputError, match=r"b\.cedar:3"):
        PolicyEngine.from_directory(tmp_path)


def test_deep_nesting_is_refused_before_cedar_sees_it(tmp_path: Path) -> None:
    deep = "(" * 5000 + "true" + ")" * 5000
    write(tmp_path, "deep.cedar", f"permit (principal, action, resource) when {{ {deep} }};")
    problems = check_policies(tmp_path)
    assert len(problems) == 1
    assert f"nested over {MAX_NESTING}" in problems[0].message


def test_empty_duplicate_and_non_utf8_policy_sets_are_errors(tmp_path: Path) -> None:
    assert "no policies" in str(check_policies(tmp_path)[0])
    rule = '@id("x") permit (principal, action == Bastion::Action::"whoami", resource);\n'
    write(tmp_path, "one.cedar", rule)
    write(tmp_path, "two.cedar", rule)
    assert "used twice" in str(check_policies(tmp_path)[0])
    (tmp_path / "two.cedar").write_bytes(b"\xff\xfe")
    assert "UTF-8" in str(check_policies(tmp_path)[0])


def test_the_default_policies_are_valid_and_named() -> None:
    assert check_policies() == []
    ids = PolicyEngine.default().policy_ids
    assert {"guard.step-up", "guard.quarantine", "role.consumer"} <= set(ids)


def test_a_custom_policy_folder_replaces_the_defaults(tmp_path: Path) -> None:
    write(
        tmp_path,
        "p.cedar",
        '@id("all-pull")\npermit (principal, action == '
        'Bastion::Action::"version.pull", resource);\n',
    )
    engine = PolicyEngine.from_directory(tmp_path)
    decision = engine.decide(user(), "version.pull", resource_for("version.pull"), NO_MFA)
    assert decision.allowed
    assert decision.reasons == ("all-pull",)
    assert not engine.decide(user(), "whoami", PolicyResource.hub(), NO_MFA).allowed


contexts = st.builds(
    RequestContext,
    source_ip=st.ip_addresses().map(str),
    time=st.datetimes(timezones=st.just(UTC)),
    auth_method=st.sampled_from(["password", "api_key", "oidc", "mtls"]),
    mfa_age_seconds=st.none() | st.integers(min_value=0, max_value=2**62 - 1),
    allow_yanked=st.booleans(),
    client_certificate=st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
)


@given(contexts)
def test_the_context_written_directly_is_the_json_of_its_cedar_form(
    context: RequestContext,
) -> None:
    assert json.loads(context.to_cedar_json()) == context.to_cedar()
    utc = context.time.astimezone(UTC).replace(tzinfo=None, microsecond=0)
    assert context.to_cedar()["time"]["__extn"]["arg"] == utc.isoformat() + "Z"


def test_a_repeated_request_is_decided_once(engine: PolicyEngine) -> None:
    principal = user(("med", "consumer"))
    resource = resource_for("version.pull")
    first = engine.decide(principal, "version.pull", resource, FRESH)
    kept = len(engine._decisions)
    again = engine.decide(principal, "version.pull", resource, FRESH)
    assert again is first  # the remembered decision, not a new evaluation
    assert len(engine._decisions) == kept
    later = RequestContext("10.0.0.7", NOW.replace(second=1), "password", mfa_age_seconds=61)
    assert engine.decide(principal, "version.pull", resource, later) is not first
    yanked = PolicyResource.of_version("med", "xray", "1.2.0", yanked=True)
    assert not engine.decide(principal, "version.pull", yanked, FRESH).allowed


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    context=contexts,
    action=st.sampled_from(sorted(ACTIONS)),
    role=st.sampled_from(POLICY_ROLES),
    yanked=st.booleans(),
    verdict=st.sampled_from(["clean", "quarantined"]),
)
def test_random_contexts_always_get_a_decision(
    engine: PolicyEngine,
    context: RequestContext,
    action: str,
    role: PolicyRole,
    yanked: bool,
    verdict: str,
) -> None:
    resource = resource_for(action)
    if resource.kind == "Version":
        resource = PolicyResource.of_version("med", "x", "1", yanked=yanked, scan_verdict=verdict)
    decision = engine.decide(user(("med", role)), action, resource, context)
    assert decision.errors == ()
    if decision.allowed:
        assert role in EXPECTED[action].split() or EXPECTED[action] == ANYONE
        if action in SENSITIVE:
            assert context.mfa_age_seconds is not None
            assert context.mfa_age_seconds <= 900


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    data=st.dictionaries(
        st.sampled_from(["source_ip", "time", "auth_method", "mfa_age_seconds", "allow_yanked"])
        | st.text(max_size=8),
        json_values,
    )
)
def test_random_context_documents_are_refused_cleanly_or_accepted(data: dict[str, object]) -> None:
    try:
        context = RequestContext.from_dict(data, defaults=NO_MFA)
    except InputError:
        return
    decision = PolicyEngine.default().decide(
        user(("med", "consumer")), "version.pull", resource_for("version.pull"), context
    )
    assert decision.allowed
    assert decision.errors == ()


DEFAULT_ROLES = (
    Path(__file__).parents[3] / "src/bastion/auth/policies/default/roles.cedar"
).read_text()


@settings(max_examples=60, deadline=None)
@given(
    cut=st.integers(min_value=0, max_value=len(DEFAULT_ROLES)),
    insert=st.text(alphabet='()[]{};"@=!&|<>.:,\\ \nabcxyzif-0', max_size=60),
    drop=st.integers(min_value=0, max_value=20),
)
def test_mutated_policy_files_give_a_clean_error_or_an_engine(
    cut: int, insert: str, drop: int
) -> None:
    text = DEFAULT_ROLES[:cut] + insert + DEFAULT_ROLES[cut + drop :]
    try:
        engine = PolicyEngine([PolicySource("m.cedar", text)])
    except BastionError as exc:
        message = exc.message
    else:
        message = ""
    if message:
        assert "m.cedar" in message or "no policies" in message
        return
    decision = engine.decide(user(("med", "consumer")), "whoami", PolicyResource.hub(), FRESH)
    assert isinstance(decision.allowed, bool)


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=300))
def test_random_policy_text_never_crashes(text: str) -> None:
    try:
        engine = PolicyEngine([PolicySource("r.cedar", text)])
    except InputError as exc:
        assert exc.message.startswith("invalid policies: ")  # noqa: PT017
    else:
        assert engine.policy_ids


def test_cli_policy_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    defaults = Path(__file__).parents[3] / "src/bastion/auth/policies/default"
    assert main(["policy", "check", str(defaults)]) == 0
    write(tmp_path, "bad.cedar", "permit (principal, action, resource) when { nope };\n")
    capsys.readouterr()
    assert main(["policy", "check", str(tmp_path), "--json"]) == 2
    out = capsys.readouterr()
    assert "bad.cedar:1" in out.err
    assert out.err.splitlines()[-1].startswith("bastion: error [policy_invalid]: 1 problem(s)")
    document = json.loads(out.out)
    assert document["ok"] is False
    assert document["error"]["code"] == "policy_invalid"  # once missing: only "problems"
    assert "bad.cedar:1" in document["problems"][0]


def test_cli_policy_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["policy", "test", "--principal", "alice", "--role", "consumer@med"]
    assert main([*base, "--action", "pull", "--resource", "med/xray@1.2.0"]) == 0
    assert "ALLOW version.pull" in capsys.readouterr().out
    code = main([*base, "--action", "pull", "--resource", "med/xray@1.2.0", "--yanked", "--json"])
    assert code == 1
    assert json.loads(capsys.readouterr().out)["reasons"] == ["guard.yanked-pull"]
    ctx = json.dumps({"allow_yanked": True})
    argv = [*base, "--action", "pull", "--resource", "med/xray@1", "--yanked", "--context", ctx]
    assert main(argv) == 0
    assert main([*base, "--action", "push", "--resource", "med/xray"]) == 1
    assert main([*base, "--action", "list", "--resource", "med"]) == 2
    assert main([*base, "--action", "pull", "--resource", "med/x@1", "--context", "[1"]) == 2
    write(tmp_path, "p.cedar", "permit (principal, action, resource is Bastion::Version);\n")
    argv = [*base, "--action", "pull", "--resource", "other/x@1", "--policies", str(tmp_path)]
    assert main(argv) == 0
