"""``bench report``: one self-contained HTML file for a results folder.

It holds the suites, every run with its status (complete, running, died, failed with its
error, interrupted), last env step, device and code version; the sample-efficiency table; the
cross-task aggregate where the tasks can be normalised; every figure, embedded as PNG data (no
network needed to view it); the resolved settings behind each algorithm; and the code and
library versions the runs ran under. Everything is read through the run store and the table
functions that ``bench table`` and ``bench aggregate`` use.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from mbrl_bench.reporting.ablation import ablation_table
from mbrl_bench.reporting.compare import compare
from mbrl_bench.reporting.normalise import (
    aggregate,
    iqm_over_budget,
    normalised_scores,
    random_scores,
    task_scales,
)
from mbrl_bench.reporting.plots import (
    plot_ablations,
    plot_aggregate,
    plot_curves,
    plot_improvement,
    plot_iqm_over_budget,
    plot_profiles,
)
from mbrl_bench.reporting.table import (
    load_runs,
    published_references,
    sample_efficiency_table,
)
from mbrl_bench.runner.store import RunStore, run_status

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
tr.failed td { background: #fdd; } tr.running td, tr.died td, tr.interrupted td
{ background: #ffd; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
"""


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(frame: pd.DataFrame, css_class: str, row_class: str | None = None) -> str:
    """``frame`` as an HTML table; ``row_class``: a column whose value classes each row."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for record in frame.to_dict("records"):
        cls = f' class="{html.escape(str(record[row_class]))}"' if row_class else ""
        cells = "".join(f"<td>{html.escape(_cell(v))}</td>" for v in record.values())
        rows.append(f"<tr{cls}>{cells}</tr>")
    return (f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>'
            f"{''.join(rows)}</tbody></table>")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


def run_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: where it stands (``bench status``), its last env step, device and
    code version, and the first line of its error."""
    rows = []
    for run in runs.to_dict("records"):
        st = run_status(Path(str(run["path"])))
        rows.append({"run": run["run_id"], "status": st.status,
                     "last env step": "–" if st.env_step is None else str(st.env_step),
                     "budget": run.get("budget"),
                     "device": (run["device"] if isinstance(run.get("device"), str)
                                else "cpu (before devices were recorded)"),
                     "code version": run.get("code_version"), "error": st.error or ""})
    return pd.DataFrame(rows)


def _settings(runs: pd.DataFrame) -> str:
    """The resolved recipe of each (suite, env, algorithm), from its first run's run.json."""
    parts = []
    for (suite, env, algo), group in runs.groupby(["suite", "env", "algo"], sort=True):
        meta = RunStore(Path(str(group.iloc[0]["path"]))).read_meta() or {}
        recipe = meta.get("config", {}).get("recipe", {})
        parts.append(f"<details><summary>{html.escape(f'{algo} on {env} ({suite})')}"
                     f"</summary><pre>{html.escape(json.dumps(recipe, indent=1))}</pre>"
                     "</details>")
    return "".join(parts)


def _versions(runs: pd.DataFrame) -> pd.DataFrame:
    """Each distinct (code version, library versions) with its number of runs."""
    seen: dict[tuple[str, str], int] = {}
    for path in runs["path"]:
        meta = RunStore(Path(str(path))).read_meta() or {}
        libs = ", ".join(f"{k} {v}" for k, v in sorted((meta.get("versions") or {}).items()))
        key = (str(meta.get("code_version")), libs)
        seen[key] = seen.get(key, 0) + 1
    return pd.DataFrame([{"code version": c, "libraries": lib, "runs": n}
                         for (c, lib), n in sorted(seen.items())])


def _aggregate_section(runs: pd.DataFrame, evals: pd.DataFrame, tmp: Path) -> str:
    scales, skipped = task_scales(runs, random_scores(), published_references())
    scores = normalised_scores(runs, evals, scales)
    note = (f"<p>Not normalised: {html.escape('; '.join(skipped))}</p>" if skipped else "")
    if scores.empty:
        return ("<p>No complete run on a task with a random score and a published return: "
                "no cross-task aggregate.</p>" + note)
    table = aggregate(scores)
    return (_table(table, "aggregate") + note
            + _figure(plot_aggregate(table, tmp / "aggregate.png"),
                      "Aggregate interval estimates of normalised scores (95% stratified "
                      "bootstrap)")
            + _figure(plot_profiles(scores, tmp / "profiles.png"), "Performance profiles")
            + _figure(plot_iqm_over_budget(iqm_over_budget(runs, evals, scales),
                                           tmp / "iqm_over_budget.png"),
                      "IQM of normalised scores against the fraction of each task's budget "
                      "(95% stratified bootstrap)"))


def _ablation_section(runs: pd.DataFrame, evals: pd.DataFrame, tmp: Path) -> str:
    """Each ablation against its base (``bench ablations``)."""
    table = ablation_table(runs, evals)
    if table.empty:
        return "<p>No ablation with complete runs beside its base.</p>"
    shown = table.drop(columns=["base_returns", "ablation_returns"])
    return (_table(shown, "ablations")
            + _figure(plot_ablations(table, tmp / "ablations.png"),
                      "Each ablation against its base: runs (dots), mean and 95% bootstrap "
                      "interval; the base's mean dashed"))


def _improvement_section(runs: pd.DataFrame, evals: pd.DataFrame, tmp: Path) -> str:
    """P(a > b) over the tasks both ran, for every pair of algorithms (``bench compare``)."""
    algos = sorted(runs["algo"].astype(str).unique())
    rows, lines = [], []
    for i, a in enumerate(algos):
        for b in algos[i + 1:]:
            try:
                overall = compare(runs, evals, a, b)[-1]
            except ValueError:  # no task with complete runs of both
                continue
            rows.append((a, b, overall.p, overall.lo, overall.hi))
            lines.append({"comparison": f"P({a} > {b})", "p": overall.p, "95% low": overall.lo,
                          "95% high": overall.hi, "runs": f"{overall.runs_a} vs "
                          f"{overall.runs_b}", "left out": overall.left_out})
    if not rows:
        return "<p>No two algorithms have complete runs of a common task.</p>"
    return (_table(pd.DataFrame(lines), "improvement")
            + _figure(plot_improvement(rows, tmp / "improvement.png"),
                      "Probability of improvement over the tasks both algorithms ran, at the "
                      "smaller of their budgets (95% stratified bootstrap)"))


def build_report(results_dir: str | Path, out_file: str | Path,
                 budgets: Iterable[int] | None = None) -> Path:
    """Write the report of every run under ``results_dir`` to ``out_file`` (HTML)."""
    root = Path(results_dir)
    runs, evals = load_runs(root)
    table = sample_efficiency_table(runs, evals, budgets=budgets)
    statuses = run_rows(runs)
    counts = statuses["status"].value_counts().to_dict()
    suites = ", ".join(sorted(runs["suite"].astype(str).unique()))
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            curves = _figure(plot_curves(evals, tmp / "curves.png"), "Learning curves: mean "
                             "evaluation return over seeds (failed runs left out), 95% bootstrap "
                             "band")
        except ValueError as e:  # nothing to draw: no evaluation of a run that has not failed
            curves = f"<p>No learning curve: {html.escape(str(e))}</p>"
        aggregate_html = _aggregate_section(runs, evals, tmp)
        improvement_html = _improvement_section(runs, evals, tmp)
        ablation_html = _ablation_section(runs, evals, tmp)
        body = (
            f"<h1>mbrl-bench report: {html.escape(str(root))}</h1>"
            f"<p>Suites: {html.escape(suites)}. Runs: {len(runs)} ("
            + ", ".join(f"{n} {html.escape(str(k))}" for k, n in sorted(counts.items()))
            + "). Failed runs are listed below and never averaged in; unfinished runs count "
            "only at budgets they have reached.</p>"
            "<h2>Sample efficiency</h2>" + _table(table, "efficiency")
            + curves
            + "<h2>Across tasks</h2>" + aggregate_html
            + "<h2>Probability of improvement</h2>" + improvement_html
            + "<h2>Ablations</h2>" + ablation_html
            + "<h2>Runs</h2>" + _table(statuses, "runs", row_class="status")
            + "<h2>Settings of each algorithm</h2>" + _settings(runs)
            + "<h2>Code and library versions</h2>" + _table(_versions(runs), "versions"))
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>mbrl-bench report</title><style>{STYLE}</style></head><body>{body}"
            "</body></html>")
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
