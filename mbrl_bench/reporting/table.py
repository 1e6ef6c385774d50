"""Read the run store and build the sample-efficiency table.

Run store layout: every directory (at any depth) under the results directory that holds a
``run.json`` is one run. Next to it live ``evals.csv`` (one row per evaluation, columns
:data:`EVAL_COLUMNS`, increasing ``env_step``) and optionally ``metrics.csv`` (``env_step``
plus numeric diagnostic columns).

Damaged runs never crash the reader: an unreadable ``run.json`` skips the run, a missing or
corrupt ``evals.csv`` keeps the run with no evaluation rows; both emit a
:class:`RunStoreWarning`.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from mbrl_bench.config import format_value
from mbrl_bench.reporting.aggregate import iqm, mean_ci, steps_to_threshold
from mbrl_bench.runner.store import EVAL_COLUMNS as _STORE_EVAL_COLUMNS

__all__ = [
    "EVAL_COLUMNS",
    "RUN_KEY_COLUMNS",
    "TABLE_COLUMNS",
    "RunStoreWarning",
    "format_markdown",
    "load_metrics",
    "load_runs",
    "return_at_budget",
    "sample_efficiency_table",
    "setting_keys",
    "write_table",
]

RUN_FILE = "run.json"
EVALS_FILE = "evals.csv"
METRICS_FILE = "metrics.csv"

EVAL_COLUMNS: list[str] = list(_STORE_EVAL_COLUMNS)
"""Columns of ``evals.csv``; only ``env_step`` and ``return_mean`` are strictly required."""

RUN_KEY_COLUMNS: list[str] = ["suite", "env", "algo", "seed", "run_id", "status", "path"]
"""Run columns joined onto every row of the tidy evals (and metrics) frame."""

_RUN_COLUMNS: list[str] = [
    "run_id",
    "suite",
    "env",
    "env_id",
    "algo",
    "seed",
    "status",
    "budget",
    "reporting_budgets",
    "threshold",
    "error",
    "code_version",
    "path",
]
_REQUIRED_RUN_KEYS = ("suite", "env", "algo", "seed")
_RUN_DEFAULTS: dict[str, Any] = {
    "run_id": None,
    "env_id": None,
    "status": "unknown",
    "budget": None,
    "threshold": None,
    "error": None,
    "code_version": None,
}

TABLE_COLUMNS: list[str] = [
    "suite",
    "env",
    "algo",
    "budget",
    "n_seeds",
    "failed",
    "mean",
    "ci_low",
    "ci_high",
    "iqm",
    "threshold",
    "reached",
    "steps_to_threshold_mean",
    "s_per_1k_steps",
]
"""Columns of :func:`sample_efficiency_table`, in order; the command-line settings of the runs
(``rollout.k``, ...), if any, come after ``algo``."""

_INT_TABLE_COLUMNS = ("budget", "n_seeds", "failed", "reached")


class RunStoreWarning(UserWarning):
    """A run in the store is damaged or inconsistent; it was skipped or partially read."""


def _warn(message: str) -> None:
    warnings.warn(message, RunStoreWarning, stacklevel=3)


# --------------------------------------------------------------------------- reading


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _read_run_json(path: Path, root: Path) -> dict[str, Any] | None:
    """One row of the runs frame from ``path`` (a run.json), or None if it is unusable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _warn(f"{path}: cannot read run file ({exc}); run skipped")
        return None
    if not isinstance(data, dict):
        _warn(f"{path}: expected a JSON object, got {type(data).__name__}; run skipped")
        return None
    missing = [key for key in _REQUIRED_RUN_KEYS if data.get(key) is None]
    if missing:
        _warn(f"{path}: missing key(s) {', '.join(missing)}; run skipped")
        return None
    try:
        seed = int(data["seed"])
    except (TypeError, ValueError):
        _warn(f"{path}: seed {data['seed']!r} is not an integer; run skipped")
        return None

    row: dict[str, Any] = dict(_RUN_DEFAULTS)
    row.update({key: value for key, value in data.items() if _is_scalar(value)})
    row.update(suite=str(data["suite"]), env=str(data["env"]), algo=str(data["algo"]), seed=seed)
    row["run_id"] = row["run_id"] or path.parent.relative_to(root).as_posix()
    budgets = data.get("reporting_budgets") or []
    try:
        row["reporting_budgets"] = tuple(sorted(int(b) for b in budgets))
    except (TypeError, ValueError):
        _warn(f"{path}: reporting_budgets {budgets!r} is not a list of integers; ignored")
        row["reporting_budgets"] = ()
    row["path"] = str(path.parent)
    row.update(_setting_columns(data.get("settings"), path))
    return row


def _setting_columns(settings: Any, path: Path) -> dict[str, Any]:
    """``setting_keys`` (the sorted keys of a run's command-line settings) and one text column
    per setting, named by its key (``rollout.k``)."""
    if not isinstance(settings, dict):
        if settings is not None:
            _warn(f"{path}: settings {settings!r} is not a table; ignored")
        return {"setting_keys": ()}
    texts = {str(k): v if isinstance(v, str) else format_value(v) for k, v in settings.items()}
    return {"setting_keys": tuple(sorted(texts)), **texts}


def _empty_evals() -> pd.DataFrame:
    return pd.DataFrame({col: pd.Series(dtype="float64") for col in EVAL_COLUMNS}).astype(
        {"env_step": "int64"}
    )


def _read_numeric_csv(path: Path, required: Iterable[str]) -> pd.DataFrame | None:
    """Read a CSV whose columns must be numeric; None (with a warning) if unusable."""
    try:
        df = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        _warn(f"{path}: cannot read ({exc}); its rows are ignored")
        return None
    missing = [col for col in required if col not in df.columns]
    if missing:
        _warn(f"{path}: missing column(s) {', '.join(missing)}; its rows are ignored")
        return None
    df = pd.DataFrame({col: pd.to_numeric(df[col], errors="coerce") for col in df.columns})
    bad = df["env_step"].isna()
    if bad.any():
        _warn(f"{path}: {int(bad.sum())} row(s) with a non-numeric env_step dropped")
        df = df.loc[~bad]
    df = df.astype({"env_step": "int64"})
    return df.sort_values("env_step", kind="stable").reset_index(drop=True)


def _read_evals(run_dir: Path) -> pd.DataFrame:
    """The evaluations of one run (columns :data:`EVAL_COLUMNS`); empty if missing or corrupt."""
    path = run_dir / EVALS_FILE
    if not path.is_file():
        _warn(f"{path}: missing; the run has no evaluations")
        return _empty_evals()
    df = _read_numeric_csv(path, ("env_step", "return_mean"))
    if df is None:
        return _empty_evals()
    bad = df["return_mean"].isna()
    if bad.any():
        _warn(f"{path}: {int(bad.sum())} row(s) with a non-numeric return_mean dropped")
        df = df.loc[~bad].reset_index(drop=True)
    for col in EVAL_COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    return df[EVAL_COLUMNS]


def _with_run_columns(frame: pd.DataFrame, run: dict[str, Any]) -> pd.DataFrame:
    """``frame`` with the run's :data:`RUN_KEY_COLUMNS` prepended."""
    keys = pd.DataFrame({col: [run[col]] * len(frame) for col in RUN_KEY_COLUMNS})
    return pd.concat([keys, frame.reset_index(drop=True)], axis=1)


def _concat_or_empty(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    if frames:
        return pd.concat(frames, ignore_index=True)
    return pd.DataFrame({col: pd.Series(dtype="object") for col in columns})


def load_runs(results_dir: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every run under ``results_dir`` (searched recursively for ``run.json``).

    Returns:
        ``(runs, evals)``. ``runs`` has one row per run, sorted by suite, env, algo, seed:
        the scalar ``run.json`` fields (at least ``run_id, suite, env, env_id, algo, seed,
        status, budget, threshold, error, code_version``), ``reporting_budgets`` as a sorted
        tuple of ints, and ``path`` (the run directory). ``evals`` is tidy: one row per
        evaluation with :data:`RUN_KEY_COLUMNS` followed by :data:`EVAL_COLUMNS`.

    Raises:
        ValueError: if ``results_dir`` is not a directory or holds no readable run.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise ValueError(f"results directory {root} does not exist or is not a directory")
    rows: list[dict[str, Any]] = []
    eval_frames: list[pd.DataFrame] = []
    for run_file in sorted(root.rglob(RUN_FILE)):
        row = _read_run_json(run_file, root)
        if row is None:
            continue
        rows.append(row)
        evals = _read_evals(run_file.parent)
        if len(evals):
            eval_frames.append(_with_run_columns(evals, row))
    if not rows:
        raise ValueError(f"no runs found under {root}: no readable {RUN_FILE} in any subdirectory")

    runs = pd.DataFrame(rows)
    extra = [col for col in runs.columns if col not in _RUN_COLUMNS]
    runs = runs[_RUN_COLUMNS + extra]
    runs = runs.sort_values(["suite", "env", "algo", "seed", "path"], kind="stable")
    runs = runs.reset_index(drop=True)
    duplicated = runs["run_id"][runs["run_id"].duplicated()].unique().tolist()
    if duplicated:
        _warn(f"run_id(s) found in more than one directory under {root}: {duplicated}")

    evals = _concat_or_empty(eval_frames, RUN_KEY_COLUMNS + EVAL_COLUMNS)
    evals = evals.sort_values(["suite", "env", "algo", "seed", "path", "env_step"], kind="stable")
    return runs, evals.reset_index(drop=True)


def load_metrics(runs: pd.DataFrame) -> pd.DataFrame:
    """Tidy frame of every run's optional ``metrics.csv`` (for diagnostic plots).

    Args:
        runs: the runs frame from :func:`load_runs`.

    Returns:
        :data:`RUN_KEY_COLUMNS` followed by ``env_step`` and the runs' numeric diagnostic
        columns (NaN where a run lacks a column). Runs without ``metrics.csv`` are skipped.
    """
    frames: list[pd.DataFrame] = []
    for run in runs.to_dict("records"):
        path = Path(str(run["path"])) / METRICS_FILE
        if not path.is_file():
            continue
        metrics = _read_numeric_csv(path, ("env_step",))
        if metrics is not None and len(metrics):
            frames.append(_with_run_columns(metrics, cast(dict[str, Any], run)))
    return _concat_or_empty(frames, [*RUN_KEY_COLUMNS, "env_step"])


# --------------------------------------------------------------------------- statistics


def return_at_budget(evals_of_one_run: pd.DataFrame, budget: int) -> float | None:
    """Return of one run at ``budget`` environment steps.

    Args:
        evals_of_one_run: the run's evaluations (needs ``env_step`` and ``return_mean``).
        budget: environment-step budget.

    Returns:
        ``return_mean`` of the last evaluation with ``env_step <= budget``, provided the run
        actually reached the budget (its last ``env_step >= budget``); otherwise ``None``.
    """
    if evals_of_one_run.empty:
        return None
    steps = evals_of_one_run["env_step"].to_numpy()
    returns = evals_of_one_run["return_mean"].to_numpy(dtype=np.float64)
    order = np.argsort(steps, kind="stable")
    steps, returns = steps[order], returns[order]
    if steps[-1] < budget:
        return None
    within = np.flatnonzero(steps <= budget)
    if within.size == 0:
        return None
    return float(returns[within[-1]])


def _group_budgets(group: pd.DataFrame, label: str) -> list[int]:
    """Reporting budgets of one (suite, env, algo): their union, falling back to ``budget``."""
    distinct = {tuple(b) for b in group["reporting_budgets"]}
    if len(distinct) > 1:
        _warn(f"{label}: runs disagree on reporting_budgets {sorted(distinct)}; using the union")
    budgets: set[int] = set()
    for entry in distinct:
        budgets.update(entry)
    if not budgets:
        budgets = {int(b) for b in pd.to_numeric(group["budget"], errors="coerce").dropna()}
    return sorted(budgets)


def _group_threshold(group: pd.DataFrame, label: str) -> float | None:
    values = pd.to_numeric(group["threshold"], errors="coerce").dropna().unique()
    if len(values) > 1:
        _warn(f"{label}: runs disagree on threshold {sorted(values)}; using {values[0]}")
    return float(values[0]) if len(values) else None


def _stable_rng(seed: int, *key: object) -> np.random.Generator:
    """Generator that depends only on ``seed`` and ``key``, not on table row order."""
    digest = zlib.crc32("\x00".join(str(k) for k in key).encode("utf-8"))
    return np.random.default_rng([seed, digest])


def _budget_stats(values: list[float], rng: np.random.Generator) -> dict[str, float]:
    if not values:
        return {"mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "iqm": math.nan}
    mean, lo, hi = mean_ci(values, rng)
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "iqm": iqm(values)}


def _group_rows(
    key: tuple[str, str, str],
    group: pd.DataFrame,
    run_evals: list[pd.DataFrame],
    rng_seed: int,
    budgets: list[int] | None = None,
    settings: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Table rows of one (suite, env, algo); ``run_evals`` are its non-failed runs' evals,
    ``settings`` the group's setting columns."""
    suite, env, algo = key
    label = "/".join(key)
    threshold = _group_threshold(group, label)
    reached_steps: list[int] = []
    if threshold is not None:
        for ev in run_evals:
            step = steps_to_threshold(ev["env_step"], ev["return_mean"], threshold)
            if step is not None:
                reached_steps.append(step)
    common = {
        "suite": suite,
        "env": env,
        "algo": algo,
        **(settings or {}),
        "failed": int((group["status"] == "failed").sum()),
        "threshold": math.nan if threshold is None else threshold,
        "reached": len(reached_steps),
        "steps_to_threshold_mean": float(np.mean(reached_steps)) if reached_steps else math.nan,
    }
    budgets = budgets or _group_budgets(group, label)
    if not budgets:
        _warn(f"{label}: no reporting_budgets or budget in run.json; no table rows")
    rows = []
    for budget in budgets:
        values = [v for ev in run_evals if (v := return_at_budget(ev, budget)) is not None]
        rng = _stable_rng(rng_seed, suite, env, algo, budget)
        stats = _budget_stats(values, rng)
        walls = [w for ev in run_evals if (w := wall_per_1k_steps(ev, budget)) is not None]
        row: dict[str, Any] = {**common, "budget": budget, "n_seeds": len(values), **stats}
        row["s_per_1k_steps"] = float(np.mean(walls)) if walls else math.nan
        rows.append(row)
    return rows


def wall_per_1k_steps(evals_of_one_run: pd.DataFrame, budget: int) -> float | None:
    """A run's wall-clock seconds per 1,000 env steps up to ``budget`` (evaluations
    included): its ``wall_clock_s`` at the evaluation :func:`return_at_budget` uses, over that
    evaluation's ``env_step``; None if it did not reach ``budget`` or has no time there."""
    if return_at_budget(evals_of_one_run, budget) is None:
        return None
    ev = evals_of_one_run[evals_of_one_run["env_step"] <= budget]
    last = ev.sort_values("env_step", kind="stable").iloc[-1]
    step, wall = float(last["env_step"]), float(last["wall_clock_s"])
    if step <= 0 or not math.isfinite(wall):
        return None
    return 1000.0 * wall / step


def sample_efficiency_table(
    runs: pd.DataFrame, evals: pd.DataFrame, rng_seed: int = 0,
    budgets: Iterable[int] | None = None,
) -> pd.DataFrame:
    """Sample-efficiency table: return at each reporting budget, per (suite, env, algo).

    One row per (suite, env, algo, budget) with columns :data:`TABLE_COLUMNS`:

    * ``n_seeds``: non-failed runs that reached the budget (see :func:`return_at_budget`);
    * ``mean, ci_low, ci_high``: mean return over those runs and its 95% percentile-bootstrap
      interval (:func:`~mbrl_bench.reporting.aggregate.mean_ci`); ``iqm``: interquartile mean;
      all NaN when ``n_seeds`` is 0;
    * ``failed``: runs with status ``"failed"`` (excluded from every statistic);
    * ``threshold, reached, steps_to_threshold_mean`` (same on every row of a group): the
      run.json threshold (NaN if none), how many non-failed runs reached it, and the mean
      first env step at which they did (NaN if none);
    * ``s_per_1k_steps``: mean wall-clock seconds per 1,000 env steps up to the budget over
      those runs (:func:`wall_per_1k_steps`).

    Runs that are still running or were interrupted count for the budgets they reached.
    Bootstrap randomness depends only on ``rng_seed`` and the row's key, so adding runs of
    another algorithm does not change an existing row.

    Args:
        runs: runs frame from :func:`load_runs`.
        evals: tidy evals frame from :func:`load_runs`.
        rng_seed: seed for the bootstrap.
        budgets: report at these budgets instead of the runs' ``reporting_budgets`` (e.g. the
            budgets that runs still in progress have reached).
    """
    chosen = sorted(set(budgets)) if budgets else None
    run_key = "path" if "path" in runs.columns and "path" in evals.columns else "run_id"
    evals_by_run = {k: g for k, g in evals.groupby(run_key, sort=False)}
    empty = _empty_evals()
    rows: list[dict[str, Any]] = []
    keys = setting_keys(runs)
    for key, group in runs.groupby(["suite", "env", "algo"], sort=True):
        ok = group.loc[group["status"] != "failed"]
        run_evals = [evals_by_run.get(k, empty) for k in ok[run_key]]
        # one algo folder holds one setting: its runs share their values
        settings = {k: next((str(v) for v in group[k] if isinstance(v, str)), "")
                    for k in keys}
        rows.extend(_group_rows(cast(tuple[str, str, str], key), group, run_evals, rng_seed,
                                chosen, settings))
    at = TABLE_COLUMNS.index("algo") + 1
    table = pd.DataFrame(rows, columns=[*TABLE_COLUMNS[:at], *keys, *TABLE_COLUMNS[at:]])
    return table.astype({col: "int64" for col in _INT_TABLE_COLUMNS}).reset_index(drop=True)


def setting_keys(runs: pd.DataFrame) -> list[str]:
    """The keys of the command-line settings (``--set``) of any run in ``runs``, sorted."""
    if "setting_keys" not in runs.columns:
        return []
    return sorted({k for keys in runs["setting_keys"] if isinstance(keys, tuple) for k in keys})


# --------------------------------------------------------------------------- output


def _num(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{float(value):.1f}"


def _text(value: Any) -> str:
    return str(value).replace("|", "\\|")


_MD_HEADER = [
    ("suite", ":--"),
    ("env", ":--"),
    ("algo", ":--"),
    ("budget", "--:"),
    ("seeds", "--:"),
    ("return mean [95% CI]", "--:"),
    ("IQM", "--:"),
    ("threshold", "--:"),
    ("reached", "--:"),
    ("steps to threshold", "--:"),
    ("failed", "--:"),
    ("s / 1k steps", "--:"),
]


def format_markdown(table: pd.DataFrame) -> str:
    """Render a :func:`sample_efficiency_table` as a GitHub Markdown table.

    Setting columns (any column not in :data:`TABLE_COLUMNS`) follow ``algo``, empty for
    runs without that setting. Numbers have one decimal; the interval is shown as
    ``mean [lo, hi]``; missing values are shown as an em dash. A table made with
    :func:`with_references` ends with a ``published`` column whose sources are footnotes.
    """
    refs = "published" in table.columns
    settings = [c for c in table.columns
                if c not in TABLE_COLUMNS and c not in ("published", "published_source")]
    header = [*_MD_HEADER[:3], *((k, ":--") for k in settings), *_MD_HEADER[3:],
              *((("published", "--:"),) if refs else ())]
    notes: dict[str, int] = {}
    lines = [
        "| " + " | ".join(_text(name) for name, _ in header) + " |",
        "| " + " | ".join(align for _, align in header) + " |",
    ]
    for row in table.to_dict("records"):
        has_threshold = not math.isnan(float(row["threshold"]))
        interval = (
            f"{_num(row['mean'])} [{_num(row['ci_low'])}, {_num(row['ci_high'])}]"
            if row["n_seeds"]
            else "—"
        )
        cells = [
            _text(row["suite"]),
            _text(row["env"]),
            _text(row["algo"]),
            *(_text(row[k]) if isinstance(row[k], str) else "" for k in settings),
            str(int(row["budget"])),
            str(int(row["n_seeds"])),
            interval,
            _num(row["iqm"]),
            _num(row["threshold"]),
            str(int(row["reached"])) if has_threshold else "—",
            _num(row["steps_to_threshold_mean"]),
            str(int(row["failed"])),
            _num(row["s_per_1k_steps"]),
        ]
        if refs:
            src = row["published_source"]
            mark = f" [{notes.setdefault(src, len(notes) + 1)}]" if src else ""
            cells.append(f"{_num(row['published'])}{mark}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *(f"[{n}] {_text(src)}" for src, n in notes.items())] if notes else []
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$",
                  "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def _latex(text: object) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def best_rows(table: pd.DataFrame) -> set[int]:
    """Row positions of :func:`sample_efficiency_table` to mark best: per (suite, env,
    budget), the highest mean, only when its interval lies above every other algorithm's
    interval (no overlap) and at least two algorithms have runs there."""
    marked: set[int] = set()
    frame = table.reset_index(drop=True)
    for _, group in frame.groupby(["suite", "env", "budget"], sort=False):
        group = group[group["n_seeds"] > 0]
        if len(group) < 2:
            continue
        means = group["mean"].to_numpy(dtype=float)
        top = int(np.argmax(means))
        lows, highs = group["ci_low"].to_numpy(dtype=float), group["ci_high"].to_numpy(dtype=float)
        if bool((lows[top] > np.delete(highs, top)).all()):
            marked.add(int(group.index[top]))
    return marked


def format_latex(table: pd.DataFrame) -> str:
    """Render a :func:`sample_efficiency_table` as a LaTeX ``tabular`` with booktabs rules:
    task, algorithm, budget, seeds, failed runs, mean return with its 95% interval, IQM; the
    best entry
    of a task and budget in bold only where its interval does not overlap the others'."""
    best = best_rows(table)
    lines = [r"\begin{tabular}{llrrrlr}", r"\toprule",
             r"Task & Algorithm & Budget & Seeds & Failed & Return (95\% CI) & IQM \\",
             r"\midrule"]
    previous = None
    for i, row in enumerate(table.reset_index(drop=True).to_dict("records")):
        task = f"{row['suite']}/{row['env']}"
        if previous is not None and task != previous:
            lines.append(r"\midrule")
        previous = task
        ret = (f"{_num(row['mean'])} [{_num(row['ci_low'])}, {_num(row['ci_high'])}]"
               if row["n_seeds"] else "--")
        if i in best:
            ret = rf"\textbf{{{ret}}}"
        iqm = _num(row["iqm"]) if row["n_seeds"] else "--"
        lines.append(f"{_latex(task)} & {_latex(row['algo'])} & {int(row['budget'])} & "
                     f"{int(row['n_seeds'])} & {int(row['failed'])} & {ret.replace('—', '--')} & "
                     f"{iqm.replace('—', '--')} \\\\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Published:
    """A published return for (task, algorithm, budget), shipped as data
    (``references/published.toml``)."""

    env_id: str
    algo: str
    budget: int
    value: float
    source: str
    note: str


def published_references(path: str | os.PathLike[str] | None = None) -> list[Published]:
    """The published returns in ``path`` (default: the ones shipped with the package)."""
    file = Path(path) if path is not None else Path(
        str(resources.files("mbrl_bench") / "data" / "references" / "published.toml"))
    with file.open("rb") as f:
        entries = tomllib.load(f).get("published", [])
    try:
        return [Published(str(e["env_id"]), str(e["algo"]), int(e["budget"]),
                          float(e["value"]), str(e["source"]), str(e.get("note", "")))
                for e in entries]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{file}: a [[published]] entry lacks or mistypes {e}") from e


def with_references(table: pd.DataFrame, runs: pd.DataFrame,
                    references: list[Published]) -> pd.DataFrame:
    """``table`` with ``published`` (value or NaN) and ``published_source`` columns: the
    published return of the row's task (its runs' env id), recipe and budget."""
    env_ids = {(r["suite"], r["env"]): r["env_id"] for r in runs.to_dict("records")}
    by_key = {(p.env_id, p.algo, p.budget): p for p in references}
    values, sources = [], []
    for row in table.to_dict("records"):
        env_id = str(env_ids.get((row["suite"], row["env"]), ""))
        ref = by_key.get((env_id, str(row["algo"]), int(row["budget"])))
        values.append(ref.value if ref else math.nan)
        sources.append(f"{ref.source} ({ref.note})" if ref else "")
    return table.assign(published=values, published_source=sources)


def write_table(
    results_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None,
    budgets: Iterable[int] | None = None, reference: bool = False,
) -> pd.DataFrame:
    """Load the run store, build the table (with the published numbers beside ours if
    ``reference``) and write ``table.csv``, ``table.md`` and
    ``table.tex`` (LaTeX, booktabs).

    Args:
        results_dir: root of the run store.
        out_dir: where to write (created if needed); defaults to ``results_dir``.
        budgets: report at these budgets instead of the runs' reporting budgets.

    Returns:
        The :func:`sample_efficiency_table` frame that was written.
    """
    runs, evals = load_runs(results_dir)
    table = sample_efficiency_table(runs, evals, budgets=budgets)
    if reference:
        table = with_references(table, runs, published_references())
    target = Path(results_dir if out_dir is None else out_dir)
    target.mkdir(parents=True, exist_ok=True)
    table.to_csv(target / "table.csv", index=False)
    (target / "table.md").write_text(format_markdown(table), encoding="utf-8")
    (target / "table.tex").write_text(format_latex(table), encoding="utf-8")
    return table
