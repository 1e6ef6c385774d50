"""Explicit, typed registries of parts.

One :class:`Registry` per kind of part. An entry pairs a name with a one-line description, the
part's frozen config dataclass, and the factory that builds it. Nothing is imported by string:
modules register their parts when :mod:`mbrl_bench.parts` imports them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

F = TypeVar("F")


@dataclass(frozen=True)
class Entry(Generic[F]):
    """One registered part: ``factory`` builds (or, for a loop, runs) it from a ``config_cls``."""

    name: str
    description: str
    config_cls: type
    factory: F


class Registry(Generic[F]):
    """Name → :class:`Entry` for one kind of part (models, planners, loops, …)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[F]] = {}

    def add(self, name: str, description: str, config_cls: type, factory: F) -> F:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = Entry(name, description, config_cls, factory)
        return factory

    def get(self, name: str) -> Entry[F]:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self) -> Iterator[Entry[F]]:
        return iter(self._entries[n] for n in self.names())
