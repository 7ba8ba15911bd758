"""JSON for replicated state: the standard library's exact bytes at ``msgspec``'s speed.

Every replica decodes every log entry and encodes and decodes the records it touches; with
the standard library's ``json`` that was about a quarter of a follower's apply CPU.

Why not simply ``msgspec.json``: the bytes must stay exactly those that
``json.dumps(value, separators=(",", ":"))`` wrote (``sort_keys=True`` for ``dumps_sorted``).
Replicas of two versions apply the same log during a rolling upgrade, records already on disk
were written by ``json``, and size limits (``MAX_RECORD_BYTES`` of a move, a command's size) are
checked on encoded bytes; two versions must take the same decisions. The two encoders agree
on everything except what ``json`` escapes and ``msgspec`` writes raw (characters from U+007F
up) and floats (each writes exponents its own way): ``msgspec``'s output is used when it is
printable ASCII, ``json``'s otherwise, and the state machines hold no floats (ints, strings,
booleans, ``None``, lists and dicts; ``tests/meta/test_jsonbytes.py`` holds the two equal over
such values).

``loads`` gives what ``json.loads`` gives: where ``msgspec`` refuses an input (a lone
surrogate escape, ``NaN``, a byte-order mark, out-of-range numbers) ``json`` decides, so an
input is accepted or refused exactly as before.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

_ENCODER = msgspec.json.Encoder()
_SORTED_ENCODER = msgspec.json.Encoder(order="sorted")
_DECODER = msgspec.json.Decoder()


def _plain(out: bytes) -> bool:
    """True if ``out`` is what ``json`` writes too: printable ASCII (no raw U+007F and up)."""
    return out.isascii() and b"\x7f" not in out


def dumps(value: Any) -> bytes:
    """``json.dumps(value, separators=(",", ":")).encode()``; ``value`` holds no floats."""
    try:
        out = _ENCODER.encode(value)
    except (TypeError, ValueError):  # a lone surrogate (json escapes it), a type json refuses
        pass
    else:
        if _plain(out):
            return out
    return json.dumps(value, separators=(",", ":")).encode()


def dumps_sorted(value: Any) -> bytes:
    """``json.dumps(value, separators=(",", ":"), sort_keys=True).encode()``; no floats."""
    try:
        out = _SORTED_ENCODER.encode(value)
    except (TypeError, ValueError):  # keys other than strings (json sorts those its own way),
        pass  # a lone surrogate (json escapes it), a type json refuses
    else:
        if _plain(out):
            return out
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def loads(data: bytes | str) -> Any:
    """``json.loads(data)``: the same value, and ``ValueError`` (or ``RecursionError``) for
    what it refuses."""
    try:
        return _DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return json.loads(data)
