"""Head types: one module per type, each a :class:`HeadType` unit, built from a registry.

``build_head_type(spec, labels)`` gives the unit for one head; ``register_head_type`` adds
a type (see :mod:`multitask_bert.heads.base` for what a type defines).
"""

from multitask_bert.heads import classification, multilabel, regression, tagging
from multitask_bert.heads.base import HeadModule, HeadType, RawLabel
from multitask_bert.heads.registry import (
    HEAD_TYPES,
    build_head_type,
    head_type_class,
    register_head_type,
)

__all__ = [
    "HEAD_TYPES",
    "HeadModule",
    "HeadType",
    "RawLabel",
    "build_head_type",
    "classification",
    "head_type_class",
    "multilabel",
    "register_head_type",
    "regression",
    "tagging",
]
