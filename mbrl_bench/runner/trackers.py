"""Experiment trackers that mirror a run's rows where researchers already look: TensorBoard
event files (``--logger tensorboard``) and Weights & Biases runs in offline mode (``--logger
wandb``). They are written beside ``evals.csv`` and ``metrics.csv``, never instead of them:
the CSV files stay the record every command of this package reads.

Each row becomes scalars at its ``env_step``: evaluation rows under ``eval/``, training rows
under ``train/`` (non-numeric and non-finite cells are left out). A resumed run drops the rows
past its checkpoint from the CSV files; TensorBoard is told the same (its events from that step
on are purged), and a W&B offline run records each attempt as its own run of one group (the
run's id), which ``wandb sync`` uploads; an earlier attempt's W&B run keeps the rows that the
resume dropped. A run that starts over removes both mirrors with its CSV files. A tracker that
fails is dropped with a warning; the run goes on.

Both are optional extras: ``pip install ".[tensorboard]"`` or ``".[wandb]"``.
"""

from __future__ import annotations

import math
import uuid
import zlib
from pathlib import Path
from typing import Any, Protocol

LOGGERS = {"tensorboard": "tensorboard", "wandb": "wandb"}
"""Logger name -> the package it needs."""
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"


class Tracker(Protocol):
    def log(self, kind: str, row: dict[str, Any]) -> None:
        """Record ``row`` (with its ``env_step``); ``kind`` is ``eval`` or ``train``."""

    def close(self) -> None: ...


def missing_packages(loggers: tuple[str, ...]) -> list[str]:
    """The install hints of the loggers whose package is not importable (unknown names too)."""
    import importlib.util

    problems = []
    for name in loggers:
        if name not in LOGGERS:
            problems.append(f"--logger: unknown logger {name!r} (known: {', '.join(LOGGERS)})")
        elif importlib.util.find_spec(LOGGERS[name]) is None:
            problems.append(f"--logger {name} needs the {LOGGERS[name]} package: pip install "
                            f"\"mbrl-bench[{name}]\"")
    return problems


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The finite numeric cells of ``row`` other than ``env_step``."""
    out = {}
    for key, value in row.items():
        if key == "env_step" or isinstance(value, bool):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


class TensorBoardTracker:
    """Event files in ``RUN/tensorboard/``; events at or past ``purge_step`` that an earlier
    attempt wrote are hidden (the rows the resume dropped)."""

    def __init__(self, run_dir: Path, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / TENSORBOARD_DIR),
                                    purge_step=purge_step)

    def log(self, kind: str, row: dict[str, Any]) -> None:
        step = int(float(row["env_step"]))
        for key, value in scalars(row).items():
            self.writer.add_scalar(f"{kind}/{key}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A W&B run in offline mode under ``RUN/wandb/``: project ``mbrl-bench``, grouped by the
    run's id, the resolved configuration as its config; ``env_step`` is every metric's x axis."""

    def __init__(self, run_dir: Path, meta: dict[str, Any]) -> None:
        import wandb

        (run_dir / WANDB_DIR).mkdir(exist_ok=True)
        run_id = str(meta.get("run_id", run_dir.name))
        attempt = int(meta.get("attempts") or 1)
        # unique: the same run id in another results folder or configuration must not merge
        key = f"{run_id}|{meta.get('config_hash')}|{run_dir.resolve()}"
        self.run = wandb.init(
            mode="offline", dir=str(run_dir), project="mbrl-bench", group=run_id,
            name=f"{run_id} (attempt {attempt})",
            id=f"{zlib.crc32(key.encode()):08x}-{attempt}-{uuid.uuid4().hex[:6]}",
            config={"run": {k: v for k, v in meta.items() if k != "config"},
                    **meta.get("config", {})},
            settings=wandb.Settings(silent=True, console="off"), reinit="create_new")
        self.run.define_metric("env_step")
        self.run.define_metric("*", step_metric="env_step")

    def log(self, kind: str, row: dict[str, Any]) -> None:
        values = {f"{kind}/{k}": v for k, v in scalars(row).items()}
        self.run.log({"env_step": int(float(row["env_step"])), **values})

    def close(self) -> None:
        self.run.finish()


def open_trackers(loggers: tuple[str, ...], run_dir: Path, meta: dict[str, Any],
                  purge_step: int | None) -> list[Tracker]:
    """The trackers named by ``loggers`` for one attempt of the run in ``run_dir``."""
    trackers: list[Tracker] = []
    for name in loggers:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(run_dir, purge_step))
        elif name == "wandb":
            trackers.append(WandbTracker(run_dir, meta))
        else:
            raise ValueError(f"unknown logger {name!r} (known: {', '.join(LOGGERS)})")
    return trackers
