"""What a resolved recipe runs with: every setting, its value, its doc and where it came from
(``bench show``), and the settings two resolved recipes differ in (``bench show A --diff B``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from mbrl_bench.config import field_docs, format_value, to_dict
from mbrl_bench.parts import registry_for
from mbrl_bench.spec import Recipe, Sources

DEFAULT = "default"
"""Source of a setting that no file and no ``--set`` gives (the dataclass default)."""


@dataclass(frozen=True)
class Setting:
    """One setting of a resolved recipe."""

    key: str
    """``kind.field``, or ``kind.name`` for the part's registered name."""
    value: Any
    """Plain value (JSON-like: a list for a tuple)."""
    source: str
    """``default``, a recipe's name, ``override ENV in NAME`` or ``--set``."""
    doc: str
    """First line of the field's docstring (for ``name``: the part's description)."""
    cite: str = ""
    """Where the value comes from (the recipe's ``[sources]``), or empty."""


@dataclass(frozen=True)
class Difference:
    """A setting that two resolved recipes do not share; ``None`` where one lacks it."""

    key: str
    a: Setting | None
    b: Setting | None


def settings_of(recipe: Recipe, sources: Sources,
                cites: dict[str, dict[str, str]] | None = None) -> list[Setting]:
    """Every setting of every part of ``recipe`` (parts in recipe order, fields in class
    order), each part's name first. ``sources`` is what :func:`~mbrl_bench.spec.resolve_recipe`
    returns with the recipe; ``cites`` what :func:`~mbrl_bench.spec.citations` makes of it
    (defaults cite their config class)."""
    out: list[Setting] = []
    cites = cites or {}
    for part in recipe.parts:
        src = sources.get(part.kind, {})
        cite = cites.get(part.kind, {})
        default_cite = f"default of {part.config.__class__.__name__}"
        entry = registry_for(part.kind).get(part.name)
        out.append(Setting(f"{part.kind}.name", part.name, src.get("name", DEFAULT),
                           entry.description))
        docs = field_docs(part.config.__class__)
        out.extend(Setting(f"{part.kind}.{f.name}", to_dict(getattr(part.config, f.name)),
                           src.get(f.name, DEFAULT), docs.get(f.name, ""),
                           cite.get(f.name, default_cite if f.name not in src else ""))
                   for f in fields(part.config))
    return out


def differences(a: Sequence[Setting], b: Sequence[Setting]) -> list[Difference]:
    """The settings whose values differ between two recipes' :func:`settings_of`. A part that
    only one recipe has is one row, its ``name``; a field only one part has (parts of other
    config classes) is a row with ``None`` on the other side."""
    by_a, by_b = {s.key: s for s in a}, {s.key: s for s in b}
    kinds_a = {k.partition(".")[0] for k in by_a}
    kinds_b = {k.partition(".")[0] for k in by_b}
    keys = [*by_a, *(k for k in by_b if k not in by_a)]
    out = []
    for key in keys:
        kind, _, name = key.partition(".")
        if (kind in kinds_a) != (kind in kinds_b) and name != "name":
            continue  # a part only one recipe has: its name row stands for it
        sa, sb = by_a.get(key), by_b.get(key)
        if sa is None or sb is None or sa.value != sb.value:
            out.append(Difference(key, sa, sb))
    return out


def align(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: columns padded to their widest cell, the last one left ragged."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header) - 1)]
    lines = []
    for row in (header, *rows):
        cells = [c.ljust(w) for c, w in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines) + "\n"


def format_settings(settings: Sequence[Setting]) -> str:
    """``settings`` as an aligned table: setting, value, source (the file that set it), cites
    (where its value comes from), doc."""
    return align(("setting", "value", "source", "cites", "doc"),
                 [(s.key, format_value(s.value), s.source, s.cite or "—", s.doc)
                  for s in settings])


def format_differences(diffs: Sequence[Difference], name_a: str, name_b: str) -> str:
    """``diffs`` as an aligned table: setting, then each recipe's value and its source
    (``—`` where a recipe lacks the setting)."""
    def cells(s: Setting | None) -> tuple[str, str]:
        return ("—", "") if s is None else (format_value(s.value), s.source)

    rows = [(d.key, *cells(d.a), *cells(d.b)) for d in diffs]
    return align(("setting", name_a, "source", name_b, "source"), rows)
