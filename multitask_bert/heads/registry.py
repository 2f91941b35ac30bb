"""The head types the pipeline knows, keyed by the ``type:`` of a head in a task YAML."""

from __future__ import annotations

from typing import TYPE_CHECKING

from multitask_bert.heads.base import HeadType

if TYPE_CHECKING:
    from multitask_bert.tasks import HeadSpec

HEAD_TYPES: dict[str, type[HeadType]] = {}
"""Registered head types by name (the four built-in ones, then any a user registers)."""


def register_head_type(cls: type[HeadType]) -> type[HeadType]:
    """Class decorator: make a :class:`HeadType` subclass available as ``type: <cls.name>``.

    Registering another class under a taken name replaces it (tests and notebooks re-run
    their definitions)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__}: a head type needs a `name` class attribute")
    HEAD_TYPES[name] = cls
    return cls


def head_type_class(name: str) -> type[HeadType]:
    """The registered class of a head type name."""
    try:
        return HEAD_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown head type {name!r}; known: {sorted(HEAD_TYPES)}") from None


def build_head_type(spec: HeadSpec, labels: list[str] | None = None) -> HeadType:
    """The head type of ``spec`` bound to it and its label vocabulary."""
    return head_type_class(spec.type)(spec, labels)
