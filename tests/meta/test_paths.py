"""Path validation and the path helpers: every rule, its error reason, and the canonical form."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keelfs.errors import InvalidPath
from keelfs.meta import paths

VALID = [
    ("/", "/"),
    ("/a", "/a"),
    ("/a/", "/a"),
    ("/a/b/c", "/a/b/c"),
    ("/a/b/c/", "/a/b/c"),
    ("/.a", "/.a"),
    ("/a..", "/a.."),
    ("/...", "/..."),
    ("/a b", "/a b"),
    ("/ ", "/ "),
    ("/naïve/日本語/🙂", "/naïve/日本語/🙂"),
    ("/a:b", "/a:b"),
    ("/" + "x" * 255, "/" + "x" * 255),
    ("/" + "é" * 127, "/" + "é" * 127),  # 254 bytes
    ("/" + "/".join(["y" * 200] * 20), "/" + "/".join(["y" * 200] * 20)),  # 4020 bytes
]

INVALID = [
    ("", "empty path"),
    ("a", "not absolute"),
    ("a/b", "not absolute"),
    ("./a", "not absolute"),
    ("//", "empty component"),
    ("//a", "empty component"),
    ("/a//b", "empty component"),
    ("/a//", "empty component"),
    ("/.", "'.' is not allowed"),
    ("/..", "'..' is not allowed"),
    ("/a/./b", "'.' is not allowed"),
    ("/a/../b", "'..' is not allowed"),
    ("/a/..", "'..' is not allowed"),
    ("/a/.", "'.' is not allowed"),
    ("/a\x00b", "NUL"),
    ("/\x00", "NUL"),
    ("/a\nb", "control character U+000A"),
    ("/a\tb", "control character U+0009"),
    ("/a\rb", "control character U+000D"),
    ("/\x1b[31m", "control character U+001B"),
    ("/a\x7fb", "control character U+007F"),
    ("/a\x85b", "control character U+0085"),
    ("/a\x9fb", "control character U+009F"),
    ("/a\ud800b", "surrogate"),
    ("/" + "x" * 256, "name of 256 bytes"),
    ("/" + "é" * 128, "name of 256 bytes"),
    ("/ok/" + "x" * 300 + "/ok", "name of 300 bytes"),
    ("/" + "/".join(["y" * 200] * 21), "path of 4221 bytes"),
    ("/" + "a/" * 2048, "path of 4097 bytes"),
]


@pytest.mark.parametrize(("raw", "canonical"), VALID)
def test_valid(raw: str, canonical: str) -> None:
    assert paths.normalize(raw) == canonical
    assert paths.validate(raw) == canonical
    assert paths.normalize(canonical) == canonical  # idempotent


@pytest.mark.parametrize(("raw", "reason"), INVALID)
def test_invalid(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPath) as info:
        paths.normalize(raw)
    assert reason in info.value.reason
    assert info.value.code == "INVALID_PATH"
    assert info.value.path == raw


@pytest.mark.parametrize("raw", [None, 7, b"/a", ["/a"], 1.5])
def test_not_a_string(raw: object) -> None:
    with pytest.raises(InvalidPath, match="must be a string"):
        paths.normalize(raw)  # type: ignore[arg-type]


def test_limits_are_exact() -> None:
    assert paths.MAX_NAME_BYTES == 255 and paths.MAX_PATH_BYTES == 4096
    exactly = "/" + "/".join(["z" * 255] * 16)  # 16 x (1 + 255) bytes
    assert len(exactly.encode()) == 4096
    assert paths.normalize(exactly) == exactly
    with pytest.raises(InvalidPath, match="4097 bytes"):
        paths.normalize(exactly + "z")


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\x00", "a\n", "x" * 256, "\ud800"])
def test_validate_name_rejects(name: str) -> None:
    with pytest.raises(InvalidPath):
        paths.validate_name(name)


def test_validate_name_accepts() -> None:
    for name in ("a", ".a", "a.", "...", "x" * 255, "日本"):
        paths.validate_name(name)


def test_split_parent_name_join() -> None:
    assert paths.split("/") == []
    assert paths.split("/a") == ["a"]
    assert paths.split("/a/b/c") == ["a", "b", "c"]
    assert paths.parent("/a") == "/"
    assert paths.parent("/a/b/c") == "/a/b"
    assert paths.name("/a/b/c") == "c"
    assert paths.name("/") == ""
    assert paths.join("/", "a") == "/a"
    assert paths.join("/a/b", "c") == "/a/b/c"
    with pytest.raises(InvalidPath, match="no parent"):
        paths.parent("/")


def test_ancestors_and_is_ancestor() -> None:
    assert paths.ancestors("/") == []
    assert paths.ancestors("/a") == ["/"]
    assert paths.ancestors("/a/b/c") == ["/", "/a", "/a/b"]
    assert paths.is_ancestor("/", "/a")
    assert paths.is_ancestor("/a", "/a/b/c")
    assert not paths.is_ancestor("/a", "/a")
    assert not paths.is_ancestor("/a", "/ab")
    assert not paths.is_ancestor("/a/b", "/a")
    assert not paths.is_ancestor("/", "/")


def test_routing_key_is_the_parent() -> None:
    assert paths.routing_key("/") == "/"
    assert paths.routing_key("/a") == "/"
    assert paths.routing_key("/a/b/c") == "/a/b"


_name = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"),
    min_size=1,
    max_size=12,
).filter(lambda n: n not in (".", ".."))


@settings(max_examples=200, deadline=None)
@given(st.lists(_name, min_size=1, max_size=6))
def test_components_round_trip(names: list[str]) -> None:
    path = "/" + "/".join(names)
    assert paths.normalize(path) == path
    assert paths.split(path) == names
    assert paths.join(paths.parent(path), paths.name(path)) == path
    assert paths.ancestors(path)[-1] == paths.parent(path)
    assert all(paths.is_ancestor(a, path) for a in paths.ancestors(path))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_anything_either_normalizes_or_raises_invalid_path(raw: str) -> None:
    try:
        canonical = paths.normalize(raw)
    except InvalidPath:
        return
    assert paths.normalize(canonical) == canonical
    assert canonical == "/" or not canonical.endswith("/")
    assert "//" not in canonical
