"""Names and references on the hub: strict patterns, clear errors, never a crash."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.errors import InputError
from bastion.registry import ModelRef, check_file_path, check_name, parse_ref
from bastion.registry._names import check_alias, check_version


def test_references_parse_into_their_parts() -> None:
    assert parse_ref("med/xray@1.2.0") == ModelRef("med", "xray", "1.2.0")
    assert parse_ref("med/xray:prod") == ModelRef("med", "xray", alias="prod")
    assert parse_ref("med/xray") == ModelRef("med", "xray")
    assert str(parse_ref("med/xray@1.2.0+build.7")) == "med/xray@1.2.0+build.7"


@pytest.mark.parametrize(
    "text",
    [
        "med",
        "med/xray/extra",
        "/xray",
        "med/",
        "Med/xray",
        "med/x ray",
        "med/xray@",
        "med/..",
        "med/xray@../1",
        "med/xray:1abc",
        "../med/xray",
        "med/xray@1..2",
        "a" * 300,
    ],
)
def test_bad_references_are_refused_with_a_clear_error(text: str) -> None:
    with pytest.raises(InputError):
        parse_ref(text, need_version=True)


def test_a_version_is_required_where_one_is_needed() -> None:
    with pytest.raises(InputError, match="must name a version"):
        parse_ref("med/xray", need_version=True)
    with pytest.raises(InputError, match="must name a version"):
        parse_ref("med/xray:prod", allow_alias=False)


@pytest.mark.parametrize("name", ["med", "x", "a.b_c-d", "a" * 64, "0day"])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", "A", "-a", "a-", "a" * 65, "a/b", "a..b", ".a", "é"])
def test_bad_names(name: str) -> None:
    with pytest.raises(InputError, match="not valid"):
        check_name(name)


def test_aliases_cannot_look_like_versions() -> None:
    assert check_alias("prod") == "prod"
    with pytest.raises(InputError, match="must not start with a digit"):
        check_alias("1.2.0")
    assert check_version("v1") == "v1"


@pytest.mark.parametrize("path", ["model.safetensors", "sub/dir/w.bin", "a:b", "name with space"])
def test_good_file_paths(path: str) -> None:
    assert check_file_path(path) == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a//b",
        "./a",
        "a/.",
        "a\\b",
        "a\x00b",
        "a\nb",
        "x" * 1025,
    ],
)
def test_unsafe_file_paths_are_refused(path: str) -> None:
    with pytest.raises(InputError):
        check_file_path(path)


@given(st.text(max_size=300))
def test_any_text_gives_a_reference_or_an_input_error(text: str) -> None:
    try:
        ref = parse_ref(text)
    except InputError:
        return
    assert "/" not in ref.namespace
    assert "/" not in ref.model
    assert ".." not in str(ref)


@given(st.text(max_size=200))
def test_any_text_gives_a_safe_path_or_an_input_error(text: str) -> None:
    try:
        path = check_file_path(text)
    except InputError:
        return
    parts = path.split("/")
    assert not path.startswith("/")
    assert ".." not in parts
    assert "" not in parts
