"""Settings given on the command line: ``--set KIND.FIELD=V1,V2,...`` and the sweeps they make.

A ``--set`` names a part kind of a recipe (``loop``, ``optimizer``, ``model``, ``rollout``,
``planner``) and a setting of that part's config, with one or more values written as TOML
values (``1``, ``0.5``, ``true``, ``"text"``, ``[1, 2]``; a bare word such as ``mean`` is a
string). Values are separated by commas outside brackets and quotes. Several ``--set`` options
make the product of their values; each point of the product is one :data:`Settings`, applied
by :func:`mbrl_bench.spec.load_recipe` over everything the recipe files set.

Runs with settings live in their own result folder, named by :func:`settings_label`:
``mbpo[rollout.k=5]``, ``mbpo[optimizer.updates_per_step=10,rollout.k=5]`` (keys sorted).
"""

from __future__ import annotations

import itertools
import re
import tomllib
from collections.abc import Sequence
from typing import Any

from mbrl_bench.config import format_value
from mbrl_bench.errors import ConfigError
from mbrl_bench.parts import PART_KINDS

Settings = tuple[tuple[str, Any], ...]
"""One point of a sweep: ``(("rollout.k", 5), ...)``, keys ``kind.field``, in option order."""

SetOption = tuple[str, tuple[Any, ...]]
"""One parsed ``--set``: its key and its values."""

_KEY_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)$")
_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.+\-]")
_BRACKETS = {"[": "]", "{": "}"}


def split_values(text: str) -> list[str]:
    """``text`` split on the commas that are outside brackets and quotes, each piece stripped:
    ``'1, [2, 3], "a,b"'`` → ``['1', '[2, 3]', '"a,b"']``."""
    pieces: list[str] = []
    depth, quote, start = 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote and text[i - 1] != "\\" else quote
        elif ch in "\"'":
            quote = ch
        elif ch in _BRACKETS:
            depth += 1
        elif ch in _BRACKETS.values():
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            pieces.append(text[start:i].strip())
            start = i + 1
    pieces.append(text[start:].strip())
    return pieces


def parse_value(text: str) -> Any:
    """A TOML value (``5``, ``0.5``, ``true``, ``"x"``, ``[1, 2]``); anything else, such as a
    bare word, is that text as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set(option: str) -> SetOption:
    """Parse one ``--set KIND.FIELD=V1,V2,...`` (the kind must be a part kind; the field is
    checked against a recipe's part when the settings are applied)."""
    key, eq, values = option.partition("=")
    key = key.strip()
    match = _KEY_RE.match(key)
    if not eq or match is None:
        raise ConfigError(f"--set {option}", "", "expected KIND.FIELD=V1,V2,... "
                          "(e.g. rollout.k=1,5,15)")
    if match.group(1) not in PART_KINDS:
        raise ConfigError(f"--set {key}", "", f"unknown part kind {match.group(1)!r}; expected "
                          f"one of: {', '.join(PART_KINDS)}")
    pieces = split_values(values)
    if any(not p for p in pieces):
        raise ConfigError(f"--set {key}", "", f"an empty value in {values!r}")
    return key, tuple(parse_value(p) for p in pieces)


def sweep_points(options: Sequence[SetOption]) -> list[Settings]:
    """Every combination of the options' values (the first option varies slowest); ``[()]``
    without options. A key given twice is an error."""
    keys = [k for k, _ in options]
    for k in keys:
        if keys.count(k) > 1:
            raise ConfigError(f"--set {k}", "", "given twice; list its values in one --set")
    return [tuple(zip(keys, combo, strict=True))
            for combo in itertools.product(*(values for _, values in options))]


def _label_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ",".join(_label_value(v) for v in value) + "]"
    text = value if isinstance(value, str) else format_value(value)
    return _UNSAFE_RE.sub("_", text)


def settings_label(algo: str, settings: Settings) -> str:
    """Folder name (and run-id part) of ``algo`` run with ``settings``: ``algo`` itself without
    settings, else ``algo[key=value,...]`` with keys sorted and values as given in the config
    (a list as ``[1,2]``, a string bare; characters unsafe in file names become ``_``)."""
    if not settings:
        return algo
    return algo + "[" + ",".join(f"{k}={_label_value(v)}" for k, v in sorted(settings)) + "]"
