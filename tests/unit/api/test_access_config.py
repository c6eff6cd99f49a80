"""The access settings file: the documented example works, bad files are clear errors."""

from __future__ import annotations

import contextlib
import re
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.api._access_config import AccessConfig
from bastion.auth._mtls import ClientCertificates
from bastion.errors import BastionError, InputError, PathNotFoundError

DOC = Path(__file__).resolve().parents[3] / "docs" / "access.md"


def _examples() -> list[str]:
    return re.findall(r"```toml\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_documented_settings_file_is_valid(tmp_path: Path) -> None:
    [example] = [e for e in _examples() if "[rate_limits]" in e and "[mtls]" in e]
    [clients] = [e for e in _examples() if "[[clients]]" in e]
    (tmp_path / "clients-ca.pem").write_text("not checked here: the TLS layer loads it\n")
    (tmp_path / "clients.toml").write_text(clients.replace('"5f:0a:...:9c"', '"' + "ab" * 32 + '"'))
    (tmp_path / "access.toml").write_text(example)
    config = AccessConfig.load(tmp_path / "access.toml")
    assert config.cors_origins == ("https://console.example.org",)
    assert config.session_idle == timedelta(minutes=30)
    assert config.session_lifetime == timedelta(hours=8)
    assert config.limits.routes == {"version.push": "60/hour"}
    assert [i.issuer for i in config.issuers] == ["https://login.example.org/realms/ml"]
    assert config.client_ca == tmp_path / "clients-ca.pem"
    assert isinstance(config.clients, ClientCertificates)
    assert [c.name for c in config.clients.clients] == ["build-farm"]


def test_no_file_means_the_defaults() -> None:
    config = AccessConfig.load(None)
    assert config.issuers == ()
    assert config.clients is None
    assert config.limits.anonymous == "60/minute"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense = 1", "unknown keys"),
        ("cors_origins = 'https://a.example'", "list of origins"),
        ("[sessions]\nidle_minutes = 0", "idle_minutes"),
        ("[sessions]\nlifetime_hours = true", "lifetime_hours"),
        ("[sessions]\nforever = 1", "unknown keys"),
        ("[rate_limits]\nanonymous = 'lots'", "anonymous"),
        ("[oidc]\nissuer = 'https://a.example'", "[[oidc]]"),
        ("[mtls]\nclients = 'c.toml'", "client_ca"),
        ("[mtls]\nclient_ca = 'nowhere.pem'", "nowhere.pem"),
        ("[[oidc", "not valid TOML"),
    ],
)
def test_bad_settings_are_refused_with_what_is_wrong(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "access.toml"
    path.write_text(text)
    with pytest.raises((InputError, PathNotFoundError), match=re.escape(message)):
        AccessConfig.load(path)


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
_KEYS = st.sampled_from(["cors_origins", "sessions", "rate_limits", "oidc", "mtls", "other"])


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(_KEYS, _VALUES, max_size=4))
def test_any_table_is_settings_or_a_bastion_error(tmp_path: Path, data: dict[str, object]) -> None:
    with contextlib.suppress(BastionError):  # anything else (a crash) fails the test
        AccessConfig.from_dict(data, base=tmp_path)
