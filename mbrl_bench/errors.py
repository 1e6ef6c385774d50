"""Exceptions raised by mbrl-bench, each carrying enough context to act on."""

from __future__ import annotations


class ConfigError(ValueError):
    """A recipe or suite file is invalid.

    The message names the file, the key (dotted path) and what was expected.
    """

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        self.detail = message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class UnsupportedEnvError(ValueError):
    """An environment lacks something a recipe needs (e.g. a termination function)."""


class NonFiniteError(FloatingPointError):
    """A loss, prediction or return became NaN or infinite; the run stops and is marked failed."""


class CorruptCheckpointError(RuntimeError):
    """A run's checkpoint exists but cannot be loaded; the message says what to do."""
