"""Typed, frozen configuration built from plain data (parsed TOML), validated at load.

Every part's settings are a frozen dataclass. :func:`build` turns a mapping into such a dataclass,
checking that every key is a field, every value has the field's type, and the dataclass's own
``__post_init__`` checks (which raise :class:`ValueError`) pass. Any failure becomes a
:class:`~mbrl_bench.errors.ConfigError` naming the file, the dotted key and what was expected.
Files are parsed as data (``tomllib``); nothing is ever executed.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import inspect
import itertools
import json
import textwrap
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from mbrl_bench.errors import ConfigError

T = TypeVar("T")


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file as data; syntax errors become :class:`ConfigError` naming the file."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), "", f"not valid TOML ({e})") from e
    except OSError as e:
        raise ConfigError(str(path), "", f"cannot be read ({e})") from e


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "a table"
    if tp is type(None):
        return "nothing (omit the key)"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, str(tp)
    )


_SCALARS: dict[Any, tuple[type, ...]] = {bool: (bool,), int: (int,), float: (int, float),
                                         str: (str,)}


def _convert(value: Any, tp: Any, source: str, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it in the field's Python type."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            if arg is not type(None):
                try:
                    return _convert(value, arg, source, key)
                except ConfigError:
                    pass
    elif origin is Literal:
        if value in get_args(tp):
            return value
    elif origin in (tuple, dict) or dataclasses.is_dataclass(tp):
        return _convert_container(value, tp, source, key)
    elif tp in _SCALARS:
        # bool is an int in Python; a TOML `true` is never a number here
        if isinstance(value, _SCALARS[tp]) and (tp is bool or not isinstance(value, bool)):
            return float(typing.cast(float, value)) if tp is float else value
    elif tp is Any:
        return value
    else:
        raise TypeError(f"config type {tp!r} at {key} is not supported by the loader")
    raise ConfigError(source, key, f"expected {_type_name(tp)}, got {value!r}")


def _convert_container(value: Any, tp: Any, source: str, key: str) -> Any:
    origin = get_origin(tp)
    if origin is tuple and isinstance(value, list | tuple):
        item_tp = get_args(tp)[0]
        return tuple(_convert(v, item_tp, source, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict and isinstance(value, Mapping):
        return dict(value)
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return build(typing.cast(type, tp), value, source, prefix=f"{key}.")
    raise ConfigError(source, key, f"expected {_type_name(tp)}, got {value!r}")


def build(cls: type[T], data: Mapping[str, Any], source: str, prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``data``.

    Raises :class:`ConfigError` (naming ``source`` and ``prefix + key``) for unknown keys, values
    of the wrong type, and values the dataclass's ``__post_init__`` rejects. Its ``ValueError``
    messages may start with ``"field: "`` to point at one field.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "(none)"
        raise ConfigError(
            source, prefix + unknown[0], f"unknown key for {cls.__name__}; expected one of: {known}"
        )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], source, prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(source, prefix + name, f"missing; expected {_type_name(hints[name])}")
    try:
        return cls(**kwargs)
    except ValueError as e:
        msg = str(e)
        field_name, sep, rest = msg.partition(": ")
        if sep and field_name in fields:
            raise ConfigError(source, prefix + field_name, rest) from e
        raise ConfigError(source, prefix.rstrip("."), msg) from e


def to_dict(obj: Any) -> Any:
    """A JSON-ready plain form of a (nested) config dataclass."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    return obj


def format_value(value: Any) -> str:
    """A short TOML-like text of a plain config value: ``5``, ``0.5``, ``true``, ``"x"``,
    ``[1, 2]``, ``none`` for ``None``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def stable_hash(data: Any) -> str:
    """A short hash of JSON-able data that does not depend on key order."""
    blob = json.dumps(to_dict(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: tables merge recursively, values replace."""
    out: dict[str, Any] = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def check(condition: bool, field_name: str, message: str) -> None:
    """Raise the ``ValueError`` that :func:`build` maps onto ``field_name`` unless ``condition``."""
    if not condition:
        raise ValueError(f"{field_name}: {message}")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The first line of the docstring under each field of the dataclass ``cls``.

    Attribute docstrings (a string right after ``name: type = default`` in the class body) are
    not kept at run time, so they are read from the source of ``cls`` and of its dataclass
    bases (a subclass's docstring wins). Fields without one, and classes whose source cannot
    be read, are left out.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if isinstance(tree.body[0], ast.ClassDef) else []
        for stmt, after in itertools.pairwise(body):
            if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                lines = inspect.cleandoc(after.value.value).splitlines()
                docs[stmt.target.id] = lines[0].strip() if lines else ""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in docs.items() if k in names}
