"""Authorisation as policy: Cedar policies, validated against Bastion's schema, decide requests.

:class:`PolicyEngine` parses the schema and the policy set once, then answers
:meth:`PolicyEngine.decide` for every request: deny unless a policy permits and none forbids.
Policy files are checked before Cedar sees them (size, nesting, count: Cedar's parser
recurses and would overflow the stack on deeply nested input), then parsed and validated
against the schema; every problem names its file and line. See ``docs/policy.md``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import cedarpy

from bastion.auth._policy_schema import (
    ACTIONS,
    PolicyPrincipal,
    PolicyResource,
    RequestContext,
    schema_text,
)
from bastion.errors import PathNotFoundError, PolicyError

__all__ = [
    "Decision",
    "PolicyEngine",
    "PolicyProblem",
    "PolicySource",
    "check_policies",
    "default_sources",
]

logger = logging.getLogger(__name__)

MAX_FILES = 256
MAX_FILE_BYTES = 1 << 20
MAX_POLICIES = 4096
MAX_STATEMENT_CHARS = 32_768
MAX_NESTING = 32  # brackets; Cedar's parser overflows the stack at a few hundred
MAX_IFS = 32  # if-then-else per policy, nested the same way
#: Pre-parsed entity sets kept (one per principal and resource seen; about 24 KiB each).
MAX_ENTITY_CACHE = 1024
#: Decisions kept: the same request (context to the second) is not evaluated twice.
MAX_DECISION_CACHE = 4096
_SHOWN_PROBLEMS = 20


@dataclass(frozen=True, slots=True)
class PolicySource:
    """One policy file's name (for messages) and text."""

    name: str
    text: str


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    """Why a policy file cannot be used, and where."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to one request: allowed or not, the policies that decided, and errors.

    ``reasons`` names the permit policies that allowed, or the forbid policies that denied;
    empty on a denial means no policy permitted (deny by default).
    """

    allowed: bool
    reasons: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"allowed": self.allowed, "reasons": list(self.reasons), "errors": list(self.errors)}


@dataclass(frozen=True, slots=True)
class _Statement:
    line: int
    text: str


@dataclass(slots=True)
class _Compiled:
    policies: Any
    names: dict[str, str] = field(default_factory=dict)


def _split(source: PolicySource) -> tuple[list[_Statement], list[PolicyProblem]]:
    """Cut a file into ``;``-terminated statements, refusing input Cedar cannot take safely."""
    text = source.text
    statements: list[_Statement] = []
    problems: list[PolicyProblem] = []
    start = -1
    start_line = line = 1
    depth = ifs = 0
    word = ""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
        elif c == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif start < 0 and not c.isspace():
            start, start_line, depth, ifs = i, line, 0, 0
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                if text[i] == "\n":
                    line += 1
                i += 2 if text[i] == "\\" else 1
        elif c in "([{":
            depth += 1
            if depth > MAX_NESTING:
                problems.append(PolicyProblem(source.name, line, f"nested over {MAX_NESTING} deep"))
                return statements, problems
        elif c in ")]}":
            depth -= 1
        elif c == ";" and start >= 0:
            statements.append(_Statement(start_line, text[start : i + 1]))
            start = -1
        if c.isalnum() or c == "_":
            word += c
        else:
            if word == "if":
                ifs += 1
                if ifs > MAX_IFS:
                    problems.append(
                        PolicyProblem(source.name, line, f"over {MAX_IFS} if-then-else")
                    )
                    return statements, problems
            word = ""
        if start >= 0 and i - start > MAX_STATEMENT_CHARS:
            problems.append(
                PolicyProblem(source.name, start_line, f"policy over {MAX_STATEMENT_CHARS} chars")
            )
            return statements, problems
        i += 1
    if start >= 0:
        statements.append(_Statement(start_line, text[start:]))
    if len(statements) > MAX_POLICIES:
        problems.append(PolicyProblem(source.name, None, f"over {MAX_POLICIES} policies"))
    return statements, problems


def _parse_problem(source: PolicySource, statements: list[_Statement]) -> PolicyProblem:
    """Locate a parse error by parsing statement by statement (only on the error path)."""
    for statement in statements:
        try:
            cedarpy.PolicySet.from_str(statement.text)
        except ValueError as exc:
            return PolicyProblem(source.name, statement.line, f"cannot parse: {str(exc)[:300]}")
    return PolicyProblem(source.name, None, "cannot parse the file as Cedar policies")


def _annotations(text: str) -> dict[str, str]:
    """Local policy id -> its ``@id`` annotation."""
    est = json.loads(cedarpy.policies_to_json_str(text))
    out: dict[str, str] = {}
    for pid, policy in est.get("staticPolicies", {}).items():
        ident = policy.get("annotations", {}).get("id")
        if isinstance(ident, str) and ident:
            out[pid] = ident
    return out


def _compile_file(
    source: PolicySource, schema: Any, names: list[str]
) -> tuple[str, list[PolicyProblem]]:
    """Check one file; on success append its policies' names and return its text."""
    statements, problems = _split(source)
    if problems:
        return "", problems
    try:
        parsed = cedarpy.PolicySet.from_str(source.text)
    except ValueError:
        return "", [_parse_problem(source, statements)]
    if parsed.templates():
        return "", [PolicyProblem(source.name, None, "templates (?principal) are not supported")]
    count = len(parsed)
    lines = [s.line for s in statements] if len(statements) == count else [None] * count
    result = cedarpy.validate_policies(source.text, schema)
    for error in result.errors:
        index = int(error.policy_id[6:]) if error.policy_id[6:].isdigit() else -1
        where = lines[index] if 0 <= index < count else None
        problems.append(PolicyProblem(source.name, where, error.error[:500]))
    if problems:
        return "", problems
    ids = _annotations(source.text)
    for index in range(count):
        line = lines[index]
        names.append(ids.get(f"policy{index}", f"{source.name}:{line or index + 1}"))
    return source.text, []


def _compile(sources: Sequence[PolicySource], schema: Any) -> tuple[_Compiled | None, list[Any]]:
    problems: list[PolicyProblem] = []
    names: list[str] = []
    texts: list[str] = []
    for source in sources:
        text, found = _compile_file(source, schema, names)
        problems.extend(found)
        texts.append(text)
    if problems:
        return None, problems
    if not names:
        return None, [PolicyProblem("(policies)", None, "no policies: nothing would be allowed")]
    if len(names) > MAX_POLICIES:
        return None, [PolicyProblem("(policies)", None, f"over {MAX_POLICIES} policies in all")]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            problems.append(PolicyProblem("(policies)", None, f"@id {name!r} is used twice"))
        seen.add(name)
    if problems:
        return None, problems
    policies = cedarpy.PolicySet.from_str("\n".join(texts))
    return _Compiled(policies, {f"policy{i}": name for i, name in enumerate(names)}), []


def _read_directory(directory: Path) -> tuple[list[PolicySource], list[PolicyProblem]]:
    if not directory.is_dir():
        raise PathNotFoundError(f"{directory} is not a directory of .cedar policy files")
    paths = sorted(p for p in directory.iterdir() if p.name.endswith(".cedar"))
    if len(paths) > MAX_FILES:
        raise PolicyError(f"{directory} holds over {MAX_FILES} .cedar files; merge some")
    sources: list[PolicySource] = []
    problems: list[PolicyProblem] = []
    for path in paths:
        if path.is_symlink() or not path.is_file():
            problems.append(PolicyProblem(str(path), None, "not a regular file (symlink?)"))
            continue
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            problems.append(PolicyProblem(str(path), None, f"larger than {MAX_FILE_BYTES} bytes"))
            continue
        try:
            sources.append(PolicySource(str(path), data.decode("utf-8")))
        except UnicodeDecodeError as exc:
            problems.append(PolicyProblem(str(path), None, f"not UTF-8 text ({exc.reason})"))
    return sources, problems


def default_sources() -> list[PolicySource]:
    """Bastion's built-in policy files, named ``default/<file>`` in messages."""
    folder = resources.files("bastion.auth").joinpath("policies/default")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".cedar")), key=str)
    return [PolicySource(f"default/{f.name}", f.read_text(encoding="utf-8")) for f in files]


def _schema() -> Any:
    try:
        return cedarpy.Schema.from_str(schema_text())
    except ValueError as exc:  # shipped with Bastion: a defect if it fails
        raise PolicyError(f"Bastion's Cedar schema does not parse: {exc}; reinstall") from exc


def check_policies(directory: Path | None = None) -> list[PolicyProblem]:
    """Every problem in a directory of ``.cedar`` files (default: Bastion's own policies)."""
    sources, problems = ([], []) if directory is None else _read_directory(directory)
    if directory is None:
        sources = default_sources()
    _, found = _compile(sources, _schema())
    return [*problems, *found]


class PolicyEngine:
    """Decides requests against a validated, pre-parsed Cedar policy set."""

    def __init__(self, sources: Sequence[PolicySource]) -> None:
        self._schema = _schema()
        compiled, problems = _compile(sources, self._schema)
        if compiled is None:
            shown = "; ".join(str(p) for p in problems[:_SHOWN_PROBLEMS])
            more = len(problems) - _SHOWN_PROBLEMS
            raise PolicyError(
                f"invalid policies: {shown}{f' (and {more} more)' if more > 0 else ''}; "
                "fix them ('bastion policy check DIR' lists every problem)"
            )
        self._compiled = compiled
        self._entities: OrderedDict[tuple[PolicyPrincipal, PolicyResource], Any] = OrderedDict()
        self._decisions: OrderedDict[tuple[Any, ...], Decision] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def default(cls) -> PolicyEngine:
        """Bastion's default roles and guards (``docs/policy.md``)."""
        return cls(default_sources())

    @classmethod
    def from_directory(cls, directory: Path) -> PolicyEngine:
        """Every ``.cedar`` file directly in ``directory``, in name order."""
        sources, problems = _read_directory(directory)
        if problems:
            raise PolicyError(f"invalid policies: {'; '.join(str(p) for p in problems[:20])}")
        return cls(sources)

    @property
    def policy_ids(self) -> tuple[str, ...]:
        return tuple(self._compiled.names.values())

    def _entities_for(self, principal: PolicyPrincipal, resource: PolicyResource) -> Any:
        key = (principal, resource)
        with self._lock:
            found = self._entities.get(key)
            if found is not None:
                self._entities.move_to_end(key)
                return found
        document = json.dumps([*principal.entities(), *resource.entities()])
        built = cedarpy.Entities.from_json_str(document, schema=self._schema)
        with self._lock:
            self._entities[key] = built
            while len(self._entities) > MAX_ENTITY_CACHE:
                self._entities.popitem(last=False)
        return built

    def decide(
        self,
        principal: PolicyPrincipal,
        action: str,
        resource: PolicyResource,
        context: RequestContext,
    ) -> Decision:
        """Allowed only if a policy permits and none forbids; any error denies."""
        expected = ACTIONS.get(action)
        if expected is None:
            return Decision(False, errors=(f"unknown action {action[:64]!r}",))
        if resource.kind != expected:
            return Decision(
                False, errors=(f"{action} applies to a {expected}, not a {resource.kind}",)
            )
        context_json = context.to_cedar_json()
        key = (principal, action, resource, context_json)
        with self._lock:
            known = self._decisions.get(key)
        if known is not None:
            return known
        request = {
            "principal": principal.uid(),
            "action": {"type": "Bastion::Action", "id": action},
            "resource": resource.uid(),
            "context": context_json,
        }
        try:
            entities = self._entities_for(principal, resource)
            allowed, reason_ids, raw_errors = _authorize(request, self._compiled.policies, entities)
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            logger.warning("authorisation failed closed: %s", exc)
            return Decision(False, errors=(f"cannot evaluate the request: {str(exc)[:300]}",))
        names = self._compiled.names
        reasons = tuple(names.get(pid, pid) for pid in reason_ids)
        errors = tuple(str(e)[:500] for e in raw_errors)
        decision = Decision(allowed and not errors, reasons, errors)
        with self._lock:
            self._decisions[key] = decision
            while len(self._decisions) > MAX_DECISION_CACHE:
                self._decisions.popitem(last=False)
        return decision


def _authorize(request: dict[str, Any], policies: Any, entities: Any) -> tuple[bool, Any, Any]:
    """One Cedar decision: (allowed, ids of the deciding policies, errors).

    cedarpy's public ``is_authorized`` wraps its extension with a copy of the request, a
    batch of one and an ``AuthzResult`` object; calling the extension directly with the
    pre-parsed handles halves the time of a decision. Where the extension's shape is not
    the one known here (another cedarpy), the public function is used.
    """
    inner = getattr(entities, "_inner", None)
    if _EXTENSION is not None and inner is not None:
        text = _EXTENSION(request, policies, inner, None, False)
        quick = _QUICK_ANSWER.match(text)
        if quick is not None:  # the usual shape: read without parsing the whole answer
            return quick.group(1) == "Allow", json.loads(quick.group(2)), ()
        answer = json.loads(text)
        diagnostics = answer.get("diagnostics", {})
        return (
            answer.get("decision") == "Allow",
            diagnostics.get("reason", []),
            diagnostics.get("errors", []),
        )
    request = {**request, "context": json.loads(request["context"])}
    result = cedarpy.is_authorized(request, policies, entities)
    return result.allowed, result.diagnostics.reasons, result.diagnostics.errors


_EXTENSION = getattr(getattr(cedarpy, "_internal", None), "is_authorized", None)
#: An answer without errors, as cedarpy 4 writes it: the decision and the deciding policies'
#: ids (which are ``policyN``: no quote or bracket inside). Anything else is parsed in full.
_QUICK_ANSWER = re.compile(
    r'\{"decision":"(Allow|Deny)","correlation_id":null,"diagnostics":\{"reason":(\[[^\]]*\]),'
    r'"id_annotations_by_reason":\{[^}]*\},"errors":\[\]\}'
)
