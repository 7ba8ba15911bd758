"""``frozen.fast_init``: every class given the faster ``__init__`` builds exactly what its
dataclass ``__init__`` built (same parameters, defaults and field values) and stays frozen;
a class it cannot serve exactly is refused when decorated."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

import keelfs.meta.namespace  # noqa: F401  (every command registry, every record class)
import keelfs.meta.shardmap  # noqa: F401
from keelfs.meta.frozen import _ORIGINAL, fast_init, original_init

CLASSES = sorted(_ORIGINAL, key=lambda c: c.__qualname__)


def test_the_hot_classes_are_served() -> None:
    names = {c.__name__ for c in CLASSES}
    assert {"Inode", "Context", "Envelope", "Result", "Caller", "Create", "FileInfo"} <= names


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__qualname__)
def test_fast_init_builds_what_the_dataclass_init_built(cls: type) -> None:
    original = original_init(cls)
    assert inspect.signature(cls.__dict__["__init__"]) == inspect.signature(original)
    fields = dataclasses.fields(cls)
    values = {f.name: object() for f in fields}
    required = {f.name: values[f.name] for f in fields if f.default is dataclasses.MISSING}
    for args, kwargs in (((), values), ((), required), (tuple(values.values()), {})):
        fast = cls(*args, **kwargs)
        slow: Any = object.__new__(cls)
        original(slow, *args, **kwargs)
        for f in fields:
            assert getattr(fast, f.name) is getattr(slow, f.name), f.name
        if fields:
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(fast, fields[0].name, 1)
    with pytest.raises(TypeError):
        cls(**values, not_a_field=1)
    if required:
        with pytest.raises(TypeError):
            cls()


def _refused(cls: Any) -> None:
    with pytest.raises(TypeError):
        fast_init(cls)


def test_what_it_cannot_do_exactly_is_refused() -> None:
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Factory:
        a: tuple[int, ...] = dataclasses.field(default_factory=tuple)

    @dataclasses.dataclass(frozen=True, slots=True)
    class PostInit:
        a: int

        def __post_init__(self) -> None:
            pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class KeywordOnly:
        a: int = dataclasses.field(kw_only=True)

    @dataclasses.dataclass(frozen=True, slots=True, init=False)
    class OwnInit:
        a: int

        def __init__(self, a: int) -> None:
            object.__setattr__(self, "a", a * 10)

    for cls in (NoSlots, NotFrozen, Factory, PostInit, KeywordOnly, OwnInit):
        _refused(cls)


def test_an_init_var_is_refused() -> None:
    """An ``InitVar`` is a parameter of ``__init__`` but no field: a faster ``__init__`` of
    the fields alone would drop it."""
    with pytest.raises(TypeError, match="more or other than its fields"):

        @fast_init
        @dataclasses.dataclass(frozen=True, slots=True)
        class WithInitVar:
            a: int
            scale: dataclasses.InitVar[int] = 1
