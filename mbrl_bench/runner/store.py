"""One directory per run: ``run.json``, ``evals.csv``, ``metrics.csv`` and an atomic checkpoint.

Rows are appended and flushed as they happen. A checkpoint is written (temporary file, fsync,
rename) after each evaluation row. On resume, rows past the checkpoint's step are dropped before
the run continues, so no evaluation row is lost or duplicated whenever the run died.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import platform
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch

import mbrl_bench
from mbrl_bench.errors import ConfigError, CorruptCheckpointError

EVAL_COLUMNS = ("env_step", "episodes", "return_mean", "return_std", "return_min", "return_max",
                "wall_clock_s", "model_return_mean")
"""``model_return_mean``: the evaluated policy's return predicted by the model from the same start
states (model-based recipes; empty otherwise)."""
RUN_FILE, EVALS_FILE, METRICS_FILE, CHECKPOINT_FILE, LOCK_FILE = (
    "run.json", "evals.csv", "metrics.csv", "checkpoint.pt", ".lock")


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@cache
def code_version() -> str:
    """Git commit of the package source (``+dirty`` if modified), else the package version."""
    src = Path(mbrl_bench.__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=src, text=True,
                             capture_output=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=src, text=True,
                               capture_output=True, timeout=10, check=True).stdout.strip()
        return f"{sha}+dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return f"v{mbrl_bench.__version__}"


def versions() -> dict[str, str]:
    import gymnasium
    import numpy

    out = {"python": platform.python_version(), "mbrl_bench": mbrl_bench.__version__,
           "torch": torch.__version__, "numpy": numpy.__version__,
           "gymnasium": gymnasium.__version__}
    try:
        import mujoco

        out["mujoco"] = mujoco.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunStore:
    """The files of one run under ``run_dir``."""

    def __init__(self, run_dir: Path, loggers: tuple[str, ...] = ()) -> None:
        self.dir = run_dir
        self._metric_columns: list[str] | None = None
        self.loggers = loggers
        """Trackers that mirror the rows (:mod:`~mbrl_bench.runner.trackers`), opened at the
        first row of this attempt, after a resume has truncated the files."""
        self._trackers: list[Any] | None = None
        self._resumed_at: int | None = None

    # ------------------------------------------------------------------ trackers
    def _mirror(self, kind: str, rows: list[dict[str, Any]]) -> None:
        """Hand ``rows`` to the trackers. A tracker that fails (a full disk, a broken W&B
        install) is dropped with a warning: the CSV files are the record, and a run is never
        failed by its mirror."""
        if not self.loggers:
            return
        if self._trackers is None:
            from mbrl_bench.runner.trackers import open_trackers

            self._trackers = []
            purge = None if self._resumed_at is None else self._resumed_at + 1
            for name in self.loggers:
                try:
                    self._trackers += open_trackers((name,), self.dir, self.read_meta() or {},
                                                    purge)
                except Exception as e:
                    self._tracker_failed(name, e)
        for tracker in list(self._trackers):
            try:
                for row in rows:
                    tracker.log(kind, row)
            except Exception as e:
                self._trackers.remove(tracker)
                self._tracker_failed(type(tracker).__name__, e)

    def _tracker_failed(self, name: str, error: Exception) -> None:
        warnings.warn(f"{self.dir}: logger {name} stopped ({type(error).__name__}: {error}); "
                      "the CSV files go on", RuntimeWarning, stacklevel=3)

    def close_trackers(self) -> None:
        """Flush and close the trackers of this attempt (a no-op without any); never raises."""
        for tracker in self._trackers or []:
            try:
                tracker.close()
            except Exception as e:
                self._tracker_failed(type(tracker).__name__, e)
        self._trackers = None

    # ------------------------------------------------------------------ run.json
    def read_meta(self) -> dict[str, Any] | None:
        p = self.dir / RUN_FILE
        if not p.exists():
            return None
        try:
            return dict(json.loads(p.read_text()))
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise ConfigError(str(p), "", f"not a valid run.json ({e}); move {self.dir} away "
                              "(or delete it) to start that run again") from e

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        blob = json.dumps(meta, indent=2, sort_keys=False).encode()
        _atomic_write(self.dir / RUN_FILE, lambda f: f.write(blob))

    def update_meta(self, **fields: Any) -> dict[str, Any]:
        meta = self.read_meta() or {}
        meta.update(fields)
        self.write_meta(meta)
        return meta

    # ------------------------------------------------------------------ rows
    def append_eval(self, row: dict[str, Any]) -> None:
        self._append(self.dir / EVALS_FILE, list(EVAL_COLUMNS), [row])
        self._mirror("eval", [row])

    def append_metrics(self, row: dict[str, Any]) -> None:
        self.extend_metrics([row])

    def extend_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Append ``rows`` to ``metrics.csv`` with one flush (for loops that log many small
        rows, e.g. one per episode, between two checkpoints)."""
        if not rows:
            return
        path = self.dir / METRICS_FILE
        if self._metric_columns is None:
            self._metric_columns = self._header(path) or list(rows[0])
        self._metric_columns = self._append(path, self._metric_columns, rows)
        self._mirror("train", rows)

    @staticmethod
    def _header(path: Path) -> list[str]:
        if not path.exists() or path.stat().st_size == 0:
            return []
        with path.open(newline="") as f:
            return next(csv.reader(f), [])

    @classmethod
    def _append(cls, path: Path, columns: list[str], rows: list[dict[str, Any]]) -> list[str]:
        """Append ``rows`` (one flush); returns the file's columns.

        A file written by an earlier version (a run resumed after an upgrade) may lack columns
        that rows now carry: its header is extended once (atomically), the old rows keep empty
        cells there, and nothing is lost or misaligned.
        """
        header = cls._header(path)
        if header and header != columns:
            columns = header + [c for c in columns if c not in header]
        missing = [c for c in dict.fromkeys(c for row in rows for c in row) if c not in columns]
        columns = columns + missing
        if header and header != columns:
            cls._rewrite(path, columns, cls._read(path))
        new = not header
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, restval="")
            if new:
                w.writeheader()
            w.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        return columns

    @staticmethod
    def _read(path: Path) -> list[dict[str, str]]:
        with path.open(newline="") as f:
            return list(csv.DictReader(f))

    @staticmethod
    def _rewrite(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=columns, restval="")
        w.writeheader()
        w.writerows(rows)
        blob = buf.getvalue().encode()
        _atomic_write(path, lambda fh: fh.write(blob))

    def read_rows(self, name: str) -> list[dict[str, str]]:
        path = self.dir / name
        return self._read(path) if path.exists() else []

    def truncate_after(self, env_step: int) -> None:
        """Drop rows of ``evals.csv`` and ``metrics.csv`` past ``env_step`` (resume point);
        trackers opened after this hide their events past it too."""
        self._resumed_at = env_step
        for name in (EVALS_FILE, METRICS_FILE):
            path = self.dir / name
            if not path.exists():
                continue
            columns = self._header(path)
            if not columns:  # killed before the header was written
                path.unlink()
                continue
            rows = [r for r in self._read(path) if int(float(r["env_step"])) <= env_step]
            self._rewrite(path, columns, rows)

    def reset_files(self) -> None:
        """Remove rows, checkpoint and the trackers' mirrors of a run that starts over."""
        from mbrl_bench.runner.trackers import TENSORBOARD_DIR, WANDB_DIR

        for name in (EVALS_FILE, METRICS_FILE, CHECKPOINT_FILE):
            (self.dir / name).unlink(missing_ok=True)
        for name in (TENSORBOARD_DIR, WANDB_DIR):
            shutil.rmtree(self.dir / name, ignore_errors=True)

    # ------------------------------------------------------------------ checkpoint
    def save_checkpoint(self, state: dict[str, Any]) -> None:
        _atomic_write(self.dir / CHECKPOINT_FILE, lambda f: torch.save(state, f))

    def load_checkpoint(self, device: torch.device | str = "cpu") -> dict[str, Any] | None:
        """The checkpoint's contents with every tensor on ``device`` (the run's), or None."""
        path = self.dir / CHECKPOINT_FILE
        if not path.exists():
            return None
        try:
            return dict(torch.load(path, weights_only=True, map_location=device))
        except Exception as e:  # truncated or foreign file: say what to do, every time
            raise CorruptCheckpointError(
                f"{path} cannot be loaded ({type(e).__name__}: {str(e)[:200]}); delete it to "
                "restart this run from scratch (bench run --retry-failed), or restore it from "
                "a backup") from e


@dataclass(frozen=True)
class RunStatus:
    """Where one run stands (``bench status``)."""

    run_dir: Path
    status: str
    """complete, failed, interrupted, running (a live process holds the run's lock), or died
    (run.json says running but no process holds the lock: rerun to resume it)."""
    env_step: int | None
    """The last env step with a row in evals.csv or metrics.csv (None: no row yet)."""
    error: str | None = None
    process: str | None = None
    """``host:pid`` of the process that last ran it (running and died runs)."""
    budget: int | None = None
    """The run's budget in env steps (as its ``run.json`` records it)."""


def run_status(run_dir: Path) -> RunStatus:
    """The status of the run in ``run_dir`` (which holds a ``run.json``)."""
    store = RunStore(run_dir)
    try:
        meta = store.read_meta() or {}
    except ConfigError as e:
        return RunStatus(run_dir, "unreadable", None, e.detail)
    steps = [int(float(r["env_step"])) for name in (EVALS_FILE, METRICS_FILE)
             for r in store.read_rows(name)[-1:] if r.get("env_step")]
    status = str(meta.get("status", "unknown"))
    if status == "running" and not _lock_held(run_dir / LOCK_FILE):
        status = "died"
    error = meta.get("error")
    process = (f"{meta.get('host', '?')}:{meta['pid']}"
               if status in ("running", "died") and meta.get("pid") else None)
    budget = meta.get("budget")
    return RunStatus(run_dir, status, max(steps) if steps else None,
                     str(error).splitlines()[0] if error else None, process,
                     budget if isinstance(budget, int) else None)


def _lock_held(path: Path) -> bool:
    """Whether a live process holds the run's lock (``execute_run`` takes it with flock)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:  # a shared probe, read-only: works on a read-only results tree
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases the probe's lock at once
    return False
