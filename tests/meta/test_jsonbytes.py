"""``keelfs.meta.jsonbytes`` writes and reads exactly what the standard library's ``json`` does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keelfs.meta import jsonbytes

_TEXT = st.text(max_size=12) | st.text(
    alphabet=st.sampled_from('\x00\x1f\x7f\x80\u00e9\u4e2d\U0001f600"\\/\n\tab'), max_size=8
)
_SCALARS = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _TEXT
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(_TEXT, inner, max_size=5)
        | st.dictionaries(st.integers(-5, 5), inner, max_size=3)
    ),
    max_leaves=25,
)


@settings(max_examples=600, deadline=None)
@given(_VALUES)
def test_dumps_writes_the_bytes_json_writes(value: Any) -> None:
    assert jsonbytes.dumps(value) == json.dumps(value, separators=(",", ":")).encode()


@settings(max_examples=600, deadline=None)
@given(_VALUES)
def test_dumps_sorted_writes_the_bytes_json_writes_with_sorted_keys(value: Any) -> None:
    try:
        expected = json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    except TypeError:  # json cannot sort a dict mixing int and str keys; never in our state
        return
    assert jsonbytes.dumps_sorted(value) == expected


@settings(max_examples=600, deadline=None)
@given(_VALUES)
def test_loads_reads_what_json_reads(value: Any) -> None:
    for text in (json.dumps(value), json.dumps(value, ensure_ascii=False)):
        data = text.encode("utf-8", "surrogatepass")
        try:
            expected = json.loads(data)
        except ValueError:
            with pytest.raises(ValueError):
                jsonbytes.loads(data)
            continue
        assert jsonbytes.loads(data) == expected


@pytest.mark.parametrize(
    "data",
    [b'"\\ud800"', b"NaN", b"1e400", b"\xef\xbb\xbf{}", b"-0.0", b'{"a":1,"a":2}', b" [1 , 2] "],
)
def test_loads_accepts_what_json_accepts_where_msgspec_would_not(data: bytes) -> None:
    expected = json.loads(data)
    got = jsonbytes.loads(data)
    assert repr(got) == repr(expected)


@pytest.mark.parametrize(
    "data", [b"[1,2,]", b'{"a":1}x', b'"\x01"', b'"\xff"', b"", b"[" * 100_000]
)
def test_loads_refuses_what_json_refuses(data: bytes) -> None:
    with pytest.raises((ValueError, RecursionError)):
        json.loads(data)
    with pytest.raises((ValueError, RecursionError)):
        jsonbytes.loads(data)
