"""Checking decoded JSON against a frozen dataclass's type hints, field by field, with one sentence for the first
thing wrong: what a checkpoint's metadata (:class:`movierec.checkpoint.meta.CheckpointMeta`) and its serving
data (:class:`movierec.serving_info.ServingInfo`) are read through."""

from __future__ import annotations

import json
import types
import typing
from dataclasses import MISSING, fields
from typing import Any


def typed_fields(cls: type, data: Any, what: str) -> dict[str, Any]:
    """The fields of dataclass ``cls`` found in ``data`` (decoded JSON), each of its declared type; ValueError
    with the reason ("its 'neutral' is "x", not a number") for the first that is missing or of another type.
    ``what`` names the whole in a reason ("its metadata is a list, not an object")."""
    if not isinstance(data, dict):
        raise ValueError(f"its {what} is {json_type(data)}, not an object")
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ValueError(f"its {what} has no {f.name!r}")
            continue
        value = data[f.name]
        if not conforms(value, hints[f.name]):
            raise ValueError(f"its {f.name!r} is {show(value)}, not {describe(hints[f.name])}")
        values[f.name] = value
    return values


def conforms(value: Any, hint: Any) -> bool:
    """Whether JSON-decoded ``value`` has the type ``hint`` (int is not bool; a float may be written as an int)."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0] if args else Any) for v in value)
    if origin is dict:
        key, item = args or (Any, Any)
        return isinstance(value, dict) and all(conforms(k, key) and conforms(v, item) for k, v in value.items())
    return isinstance(hint, type) and isinstance(value, hint)


def describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is list:
        return "a list" + (f" of {_plural(args[0])}" if args and args[0] is not Any else "")
    if origin is dict:
        return "an object" + (f" of {_plural(args[1])}" if len(args) == 2 and args[1] is not Any else "")
    names = {str: "text", int: "a whole number", float: "a number", bool: "true or false", type(None): "null"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _plural(hint: Any) -> str:
    plurals = {"text": "texts", "a whole number": "whole numbers", "a number": "numbers", "an object": "objects"}
    single = describe(hint)
    return plurals.get(single, single)


def json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, (int, float)):
        return "a number"
    return "null" if value is None else f"a {type(value).__name__}"


def show(value: Any) -> str:
    """A short quotation of a bad value for an error sentence: scalars as written, containers by kind."""
    if isinstance(value, (dict, list, tuple)):
        return json_type(value) if value else f"an empty {json_type(value).split()[-1]}"
    if not isinstance(value, (str, int, float, bool, type(None))):
        return json_type(value)
    text = json.dumps(value)
    return text if len(text) <= 30 else text[:27] + "..."
