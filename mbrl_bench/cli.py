"""``bench``: run seeded suites, list parts, and turn results into tables and plots."""

from __future__ import annotations

import inspect
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from mbrl_bench.errors import ConfigError, UnsupportedEnvError

app = typer.Typer(
    help="Fair, resumable comparisons of model-based RL algorithms.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    rich_markup_mode="rich",  # newer typer's default; help texts write "[" as "\["
)

RecipeDirs = Annotated[
    list[Path] | None,
    typer.Option("--algorithms-dir", help="Extra folder of recipe files (searched first)."),
]
SuiteDirs = Annotated[
    list[Path] | None, typer.Option("--suites-dir", help="Extra folder of suite files.")
]
SetOptions = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="KIND.FIELD=V1,V2,...", help=(
        "Set a part's setting over everything the recipe files give, e.g. rollout.k=1,5,15 or "
        "optimizer.updates_per_step=10,20 (TOML values, split on commas outside brackets and "
        "quotes; a bare word is a string). Repeatable: runs are the product of the values. "
        "Runs with settings go to ALGO\\[KEY=VALUE,...] folders (keys sorted), e.g. "
        "results/SUITE/ENV/mbpo\\[rollout.k=5]/seed_0, and record them in run.json.")),
]


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _writable_folder(path: Path, option: str) -> None:
    """A one-line error unless ``path`` is (or can be made) a folder we can write in."""
    if path.exists() and not path.is_dir():
        _fail(f"{option} {path}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".bench-write-test-"):
            pass
    except OSError as e:
        _fail(f"{option} {path}: cannot write there ({e.strerror or e})")


def _folders(paths: list[Path] | None, option: str) -> tuple[Path, ...]:
    """``--algorithms-dir`` / ``--suites-dir`` values: a one-line error for one that is not a
    folder (a misspelt one would otherwise be searched and silently find nothing)."""
    for path in paths or ():
        if not path.is_dir():
            _fail(f"{option} {path}: no such folder")
    return tuple(paths or ())


def _existing_folder(path: Path) -> None:
    if not path.is_dir():
        _fail(f"{path}: no such folder of runs")


def _parse_seeds(text: str) -> list[int]:
    try:
        if "," in text or text.strip().startswith("["):
            seeds = [int(s) for s in text.strip("[] ").split(",") if s.strip()]
        else:
            n = int(text)
            if n <= 0:
                raise ValueError
            return list(range(n))
    except ValueError:
        _fail(f"--seeds: expected N (seeds 0..N-1) or a list like 1,2,3; got {text!r}")
    if not seeds:
        _fail(f"--seeds: no seeds in {text!r}: give N or a list like 1,2,3")
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        _fail("--seeds: seeds must be distinct non-negative integers")
    return seeds


def _check_run_options(executor: str, address: str | None, workers: int, threads: int | None,
                       algos: str | None, runs_per_gpu: int) -> None:
    if executor not in ("local", "ray"):
        _fail("--executor must be local or ray")
    if address is not None and executor != "ray":
        _fail("--address is the Ray cluster's: give --executor ray with it")
    if workers < 1:
        _fail("--workers must be at least 1")
    if threads is not None and threads < 1:
        _fail("--threads must be at least 1 (omit it for cores / workers)")
    if runs_per_gpu < 1:
        _fail("--runs-per-gpu must be at least 1")
    if algos is not None and not algos.replace(",", "").strip():
        _fail("--algos names no recipe (omit it for the suite's algorithms)")


def _loggers(values: list[str] | None) -> tuple[str, ...]:
    """``--logger`` values (repeated or comma-separated), checked: a one-line error for an
    unknown name or a missing package."""
    from mbrl_bench.runner.trackers import missing_packages

    loggers = tuple(dict.fromkeys(n.strip() for item in values or () for n in item.split(",")
                                  if n.strip()))
    for problem in missing_packages(loggers):
        _fail(problem)
    return loggers


@app.command()
def run(
    suite: Annotated[str, typer.Option(help="Suite name (see `bench list`) or path to a .toml.")],
    algos: Annotated[str | None, typer.Option(
        help="Comma-separated recipe names or paths (default: the suite's algorithms).")] = None,
    seeds: Annotated[str | None, typer.Option(
        help="N (seeds 0..N-1) or a list 1,2,3 (default: the suite's seeds).")] = None,
    steps: Annotated[int | None, typer.Option(help=(
        "Override every environment's budget. The same runs with a larger --steps (or none) "
        "later continue from their last checkpoint, when this one is a multiple of the "
        "evaluation and log intervals."))] = None,
    out: Annotated[Path, typer.Option(help="Results folder.")] = Path("results"),
    env: Annotated[str | None, typer.Option(
        help="Only environments whose name or id matches this glob or substring.")] = None,
    workers: Annotated[int, typer.Option(help="Runs in parallel (local processes).")] = 1,
    executor: Annotated[str, typer.Option(
        help="local, or ray: each run a Ray task on the cluster at --address; --out must then "
        "be a folder every node sees (a shared filesystem), and a run lost with its node is "
        "retried and resumes from its last checkpoint.")] = "local",
    device: Annotated[str | None, typer.Option(
        help="auto (a GPU when there is one), cpu, cuda or cuda:N: where every part of each "
        "run lives (default: the suite's `device`, else auto). A run resumes only on the kind "
        "of device it started on.")] = None,
    runs_per_gpu: Annotated[int, typer.Option(
        help="Runs at once on each GPU (local: GPUs x this many workers; Ray: each run asks "
        "for 1/this of a GPU).")] = 1,
    address: Annotated[str | None, typer.Option(
        help="The Ray cluster (host:port of its head; default $RAY_ADDRESS, else a Ray "
        "instance started on this machine).")] = None,
    threads: Annotated[int | None, typer.Option(
        help="Torch threads per run (default: $OMP_NUM_THREADS, else cores / workers).")] = None,
    set_: SetOptions = None,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="Rerun runs that failed before (from their last checkpoint, or "
        "from scratch without one); by default they are reported and left as they are.")
    ] = False,
    logger: Annotated[list[str] | None, typer.Option(
        help="Also mirror each run's rows into tensorboard (event files in RUN/tensorboard/) "
        "or wandb (offline runs in RUN/wandb/; `wandb sync` uploads them); repeatable; the "
        "CSV files are written as always. Needs the extra: pip install "
        "\"mbrl-bench\\[tensorboard]\" or \"mbrl-bench\\[wandb]\".")] = None,
    side_by_side: Annotated[bool, typer.Option(
        "--side-by-side", help="Train the seeds of each task and recipe together in one "
        "process, their networks batched (model-free SAC today; other recipes run one at a "
        "time). Each seed keeps its generators and its folder, and on CPU writes the rows it "
        "writes alone.")] = False,
    algorithms_dir: RecipeDirs = None,
    suites_dir: SuiteDirs = None,
) -> None:
    """Run a suite: every environment × algorithm × --set value × seed. Finished runs are
    skipped and interrupted ones resume from their last checkpoint."""
    from mbrl_bench.devices import resolve_device
    from mbrl_bench.runner.execute import (
        expand,
        random_phase_warnings,
        run_all,
        sigterm_interrupts,
    )
    from mbrl_bench.spec import load_suite
    from mbrl_bench.sweep import parse_set

    _check_run_options(executor, address, workers, threads, algos, runs_per_gpu)
    if side_by_side and executor == "ray":
        _fail("--side-by-side runs in this process or a local pool (--workers), not with "
              "--executor ray")
    loggers = _loggers(logger)
    recipe_dirs = _folders(algorithms_dir, "--algorithms-dir")
    suite_dirs = _folders(suites_dir, "--suites-dir")
    try:
        s = load_suite(suite, suite_dirs)
        run_device = s.device if device is None else device
        if executor == "local":  # before anything is announced (Ray checks it on the cluster)
            resolve_device(run_device)
        algo_list = [a.strip() for a in algos.split(",") if a.strip()] if algos else list(
            s.algorithms)
        seed_list = _parse_seeds(seeds) if seeds else list(s.seeds)
        sets = [parse_set(o) for o in set_ or ()]
        specs = expand(s, algo_list, seed_list, steps, env, recipe_dirs,
                       sets=sets)
        _writable_folder(out, "--out")
        for line in random_phase_warnings(specs):
            typer.secho(f"warning: {line}", fg=typer.colors.YELLOW, err=True)
        swept = "".join(f", {k} in {list(v)}" for k, v in sets)
        typer.echo(f"{len(specs)} runs: suite {s.name}, algorithms {', '.join(algo_list)}"
                   f"{swept}, seeds {seed_list}, results in {out}")
        with sigterm_interrupts():
            outcomes = run_all(specs, out, workers, executor, threads,  # type: ignore[arg-type]
                               retry_failed=retry_failed, address=address,
                               device=run_device, runs_per_gpu=runs_per_gpu, loggers=loggers,
                               side_by_side=side_by_side)
    except (ConfigError, UnsupportedEnvError) as e:
        _fail(str(e))
        return
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
        if o.error:
            typer.secho(f"{o.run_id} {o.status}: {o.error.splitlines()[0]}",
                        fg=typer.colors.RED)
    typer.echo("done: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    if counts.get("failed") or counts.get("lost"):
        raise typer.Exit(1)
    if counts.get("busy"):
        typer.secho(f"{counts['busy']} run(s) are being run by another live process (their "
                    "folders are locked): this suite is not finished; run the same command "
                    "again once that process ends", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(3)


@app.command("list")
def list_parts(algorithms_dir: RecipeDirs = None, suites_dir: SuiteDirs = None) -> None:
    """Print every registered part, recipe and suite with a one-line description."""
    from mbrl_bench.config import load_toml
    from mbrl_bench.envs.termination import TERMINATIONS
    from mbrl_bench.parts import PART_KINDS, registry_for
    from mbrl_bench.spec import available, find_file, load_suite

    rdirs = _folders(algorithms_dir, "--algorithms-dir")
    sdirs = _folders(suites_dir, "--suites-dir")
    for kind in PART_KINDS:
        reg = registry_for(kind)
        typer.secho(f"{reg.kind}s ({kind}):", bold=True)
        for e in reg:
            typer.echo(f"  {e.name:<24} {e.description}")
        if not reg.names():
            typer.echo("  (none yet)")
    typer.secho("environments with termination functions:", bold=True)
    for env_id, (desc, _) in sorted(TERMINATIONS.items()):
        typer.echo(f"  {env_id:<24} {desc}")
    typer.secho("recipes (algorithms/):", bold=True)
    for name in available("algorithms", rdirs):
        desc = load_toml(find_file(name, "algorithms", rdirs)).get("description", "")
        typer.echo(f"  {name:<24} {str(desc).splitlines()[0] if desc else ''}")
    typer.secho("suites (suites/):", bold=True)
    for name in available("suites", sdirs):
        try:
            s = load_suite(name, sdirs)
            envs = ", ".join(e.label for e in s.envs)
            typer.echo(f"  {name:<24} {s.description} [{envs}]")
        except ConfigError as e:
            typer.echo(f"  {name:<24} INVALID: {e}")


@app.command()
def show(
    recipe: Annotated[str, typer.Argument(help="Recipe name (see `bench list`) or path.")],
    env: Annotated[str | None, typer.Option(
        help="Resolve for this gymnasium id (its per-task overrides), e.g. Hopper-v5.")] = None,
    diff: Annotated[str | None, typer.Option(
        help="Show only the settings that differ from this recipe (resolved for the same "
             "--env; --set applies to RECIPE only).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", metavar="KIND.FIELD=VALUE",
        help="Apply a setting last, as `bench run --set` does (one value).")] = None,
    algorithms_dir: RecipeDirs = None,
) -> None:
    """Every setting of a resolved recipe: its value, where it came from (`default`, the
    recipe file that set it, `override ENV in FILE`, or `--set`), the source its value follows
    (the recipe's `\\[sources]`: public code, a paper, or ours with the reason) and its doc."""
    from mbrl_bench.explain import differences, format_differences, format_settings, settings_of
    from mbrl_bench.spec import citations, resolve_recipe
    from mbrl_bench.sweep import parse_set

    dirs = _folders(algorithms_dir, "--algorithms-dir")
    try:
        if env is not None:
            _check_env_id(env)
        point = []
        for option in set_ or ():
            key, values = parse_set(option)
            if len(values) != 1:
                raise ConfigError(f"--set {key}", "", "`bench show` takes one value")
            point.append((key, values[0]))
        a, sources = resolve_recipe(recipe, env, dirs, tuple(point))
        shown = settings_of(a, sources, citations(sources, dirs))
        if diff is None:
            typer.echo(f"{a.name} ({a.source}){f' for {env}' if env else ''}: {a.description}")
            typer.echo(format_settings(shown), nl=False)
            return
        b = resolve_recipe(diff, env, dirs)
        diffs = differences(shown, settings_of(*b))
    except ConfigError as e:
        _fail(str(e))
        return
    if not diffs:
        typer.echo(f"{a.name} and {b[0].name} have the same settings")
        return
    typer.echo(format_differences(diffs, a.name, b[0].name), nl=False)


def _check_env_id(env_id: str) -> None:
    """A :class:`ConfigError` unless ``env_id`` is registered with gymnasium (ours are, by
    :mod:`mbrl_bench.spec`), the check a suite's ids get: a misspelt id would otherwise resolve
    to no per-task override without a word."""
    import gymnasium as gym

    import mbrl_bench.spec  # noqa: F401  (registers our environments)

    if env_id not in gym.registry:
        raise ConfigError("--env", env_id, "no gymnasium environment has this id (e.g. "
                          "Hopper-v5, Pendulum-v1, mbrl_bench/PointMass-v0)")


BudgetsOption = Annotated[str | None, typer.Option(
    help="Report at these budgets, e.g. 5000,10000 (default: the suites' reporting budgets).")]


def _parse_budgets(budgets: str | None) -> list[int] | None:
    """``--budgets``: positive integers, or None for the suites' reporting budgets."""
    if not budgets:
        return None
    try:
        chosen = [int(b) for b in budgets.split(",")]
    except ValueError:
        _fail(f"--budgets: expected integers like 5000,10000; got {budgets!r}")
    if min(chosen) <= 0:
        _fail("--budgets: budgets must be positive")
    return chosen


@app.command()
def table(
    results_dir: Annotated[Path, typer.Argument(help="Folder of runs (searched recursively).")],
    out: Annotated[Path | None, typer.Option(help="Where to write table.csv / table.md "
                                             "(default: RESULTS_DIR).")] = None,
    budgets: BudgetsOption = None,
    reference: Annotated[bool, typer.Option(
        "--reference", help="Put the published returns (references/published.toml) beside "
        "ours where task, recipe and budget match.")] = False,
) -> None:
    """Sample-efficiency table: mean return and 95% bootstrap interval over seeds at each
    reporting budget, seeds counted, steps to the suite's threshold (CSV, Markdown, LaTeX)."""
    from mbrl_bench.reporting.table import format_markdown, write_table

    chosen = _parse_budgets(budgets)
    _existing_folder(results_dir)
    _writable_folder(out or results_dir, "--out")
    try:
        with _store_warnings_as_lines():
            t = write_table(results_dir, out, chosen, reference)
    except ValueError as e:
        _fail(str(e))
        return
    typer.echo(format_markdown(t))
    dest = out or results_dir
    typer.echo(f"\nwritten: {dest / 'table.csv'}, {dest / 'table.md'}, {dest / 'table.tex'}")


@app.command()
def report(
    results_dir: Annotated[Path, typer.Argument(help="Folder of runs (searched recursively).")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default: "
                                             "RESULTS_DIR/report.html).")] = None,
    budgets: BudgetsOption = None,
) -> None:
    """One self-contained HTML report (figures embedded, viewable offline): every run and its
    status, the sample-efficiency table, learning curves, the cross-task aggregate where tasks
    can be normalised, each algorithm's resolved settings and the code versions."""
    from mbrl_bench.reporting.report import build_report

    chosen = _parse_budgets(budgets)
    _existing_folder(results_dir)
    dest = out or results_dir / "report.html"
    if dest.is_dir():
        _fail(f"--out: {dest} is a folder; give the HTML file to write")
    _writable_folder(dest.parent, "--out")
    try:
        with _store_warnings_as_lines():
            path = build_report(results_dir, dest, chosen)
    except ValueError as e:
        _fail(str(e))
        return
    typer.echo(f"written: {path}")


@app.command()
def compare(
    results_dir: Annotated[Path, typer.Argument(help="Folder of runs (searched recursively).")],
    a: Annotated[str, typer.Argument(help="Algorithm A (a recipe name as in the runs).")],
    b: Annotated[str, typer.Argument(help="Algorithm B.")],
    budget: Annotated[int | None, typer.Option(
        help="Compare returns at this env step (default: per task, the smaller of the two "
             "algorithms' budgets).", min=1)] = None,
) -> None:
    """Probability that A's return beats B's, per task and overall, with stratified-bootstrap
    95% intervals (Agarwal et al. 2021); only complete runs count."""
    from mbrl_bench.reporting.compare import compare as compare_runs
    from mbrl_bench.reporting.compare import format_comparisons

    _existing_folder(results_dir)
    runs, evals = _load_runs(results_dir)
    try:
        lines = compare_runs(runs, evals, a, b, budget)
    except ValueError as e:
        _fail(str(e))
        return
    typer.echo(format_comparisons(lines, a, b), nl=False)


@app.command()
def ablations(
    results_dir: Annotated[Path, typer.Argument(help="Folder of runs (searched recursively).")],
    budget: Annotated[int | None, typer.Option(
        help="Compare returns at this env step (default: per pair and task, the smaller of the "
             "two budgets).", min=1)] = None,
    out: Annotated[Path | None, typer.Option(help="Where to write ablations.csv / .md / .png "
                                             "(default: RESULTS_DIR).")] = None,
) -> None:
    """Each ablation against its base: a recipe with `base = B` (mbpo-no-model, mbpo-k1,
    mbpo-mve over mbpo; pets-ts1 ... over pets) or a --set variant B\\[key=value] of B, on every
    task both have complete runs of: each one's mean return with a bootstrap 95% interval, the
    difference ablation - base with its interval, and P(ablation > base); and the figure."""
    from mbrl_bench.reporting.ablation import ablation_table, format_ablations
    from mbrl_bench.reporting.plots import plot_ablations

    _existing_folder(results_dir)
    runs, evals = _load_runs(results_dir)
    table = ablation_table(runs, evals, budget)
    if table.empty:
        _fail(f"no ablation beside its base under {results_dir}: need complete runs of a recipe "
              "with a `base` (or a --set variant) and of that base on one task")
        return
    dest = out if out is not None else results_dir
    _writable_folder(dest, "--out")
    text = format_ablations(table)
    table.to_csv(dest / "ablations.csv", index=False)
    (dest / "ablations.md").write_text(text)
    figure = plot_ablations(table, dest / "ablations.png")
    typer.echo(text, nl=False)
    typer.echo(f"wrote {dest / 'ablations.csv'}, {dest / 'ablations.md'} and {figure} "
               "(.pdf, .svg)")


@app.command("aggregate")
def aggregate_cmd(
    results_dir: Annotated[Path, typer.Argument(help="Folder of runs (searched recursively).")],
    out: Annotated[Path | None, typer.Option(help="Where to write aggregate.csv / .md "
                                             "(default: RESULTS_DIR).")] = None,
) -> None:
    """Across tasks: IQM, mean, median and optimality gap of normalised scores (0 = random
    policy, 1 = the published return at the task's last reporting budget) with
    stratified-bootstrap 95% intervals, per algorithm; complete runs only. Also writes the
    interval estimates (aggregate.png), performance profiles (profiles.png) and the IQM against
    the fraction of each task's budget (iqm_over_budget.csv / .png)."""
    from mbrl_bench.reporting.normalise import (
        aggregate,
        format_aggregate,
        iqm_over_budget,
        normalised_scores,
        random_scores,
        task_scales,
    )
    from mbrl_bench.reporting.plots import plot_aggregate, plot_iqm_over_budget, plot_profiles
    from mbrl_bench.reporting.table import published_references

    _existing_folder(results_dir)
    _writable_folder(out or results_dir, "--out")
    runs, evals = _load_runs(results_dir)
    scales, skipped = task_scales(runs, random_scores(), published_references())
    scores = normalised_scores(runs, evals, scales)
    if scores.empty:
        _fail("no complete run on a task with a random score and a published return at its "
              f"last reporting budget under {results_dir}"
              + (f"; not normalised: {'; '.join(skipped)}" if skipped else ""))
        return
    table = aggregate(scores)
    text = format_aggregate(table, skipped)
    dest = out or results_dir
    table.to_csv(dest / "aggregate.csv", index=False)
    (dest / "aggregate.md").write_text(text)
    over_budget = iqm_over_budget(runs, evals, scales)
    over_budget.to_csv(dest / "iqm_over_budget.csv", index=False)
    figures = [plot_aggregate(table, dest / "aggregate.png"),
               plot_profiles(scores, dest / "profiles.png"),
               plot_iqm_over_budget(over_budget, dest / "iqm_over_budget.png")]
    typer.echo(text, nl=False)
    typer.echo(f"\nwritten: {dest / 'aggregate.csv'}, {dest / 'aggregate.md'}, "
               f"{', '.join(str(f) for f in figures)}")


def _load_runs(results_dir: Path) -> tuple[Any, Any]:
    """(runs, evals) of the runs under ``results_dir``, or a clear error and exit code 2."""
    from mbrl_bench.reporting.table import load_runs

    try:
        with _store_warnings_as_lines():
            return load_runs(results_dir)
    except ValueError as e:
        _fail(str(e))
        raise  # unreachable: _fail exits


@contextmanager
def _store_warnings_as_lines() -> Iterator[None]:
    """Print what the run store warns about inside (a damaged run skipped, ...) as one
    ``warning:`` line each, every time, instead of Python's warning format; other warnings
    go on as usual."""
    import warnings

    from mbrl_bench.reporting.table import RunStoreWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RunStoreWarning)
        try:
            yield
        finally:
            others = []
            for w in caught:
                if issubclass(w.category, RunStoreWarning):
                    typer.secho(f"warning: {w.message}", fg=typer.colors.YELLOW, err=True)
                else:
                    others.append(w)
    for w in others:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


@app.command()
def plot(
    results_dir: Annotated[Path, typer.Argument(help="Folder holding runs.")],
    out: Annotated[Path | None, typer.Option(help="PNG path, or a folder for curves.png, like "
                                             "the other commands (default RESULTS_DIR).")
                   ] = None,
) -> None:
    """Learning curves: mean evaluation return over seeds with a 95% bootstrap band."""
    from mbrl_bench.reporting.plots import plot_curves

    _existing_folder(results_dir)
    target = out or results_dir
    if target.suffix.lower() != ".png":
        _writable_folder(target, "--out")
        target = target / "curves.png"
    else:
        _writable_folder(target.parent, "--out")
    _, evals = _load_runs(results_dir)
    path = plot_curves(evals, target)
    typer.echo(f"written: {path}")


@app.command()
def episodes(
    results_dir: Annotated[Path, typer.Argument(help="Folder of runs (searched recursively).")],
    out: Annotated[Path | None, typer.Option(help="Where to write episodes.csv / episodes.md "
                                             "(default: RESULTS_DIR).")] = None,
) -> None:
    """Episodes to optimal of tabular runs: the first optimal training episode, the episode
    from which the greedy policy stays optimal, and the return of the last episodes. The
    optimum is the suite's `threshold` (return) and `optimal_length`."""
    from mbrl_bench.reporting.episodes import episode_table, format_episode_markdown

    runs, _ = _load_runs(results_dir)
    table = episode_table(runs)
    if table.empty:
        _fail(f"no per-episode rows (tabular runs) under {results_dir}")
        return
    dest = out or results_dir
    dest.mkdir(parents=True, exist_ok=True)
    table.to_csv(dest / "episodes.csv", index=False)
    text = format_episode_markdown(table)
    (dest / "episodes.md").write_text(text, encoding="utf-8")
    typer.echo(text)
    typer.echo(f"written: {dest / 'episodes.csv'}, {dest / 'episodes.md'}")


DIAGNOSTICS = ["eps_m", "eps_pi", "bound_branched", "k", "model_holdout_mse",
               "compounding_mse_h1", "compounding_mse_h5", "model_fit_s", "return_mean",
               "model_return_mean"]


@app.command()
def diagnostics(
    results_dir: Annotated[Path, typer.Argument(help="Folder of runs.")],
    out: Annotated[Path | None, typer.Option(help="Folder for the PNGs (default RESULTS_DIR).")
                   ] = None,
) -> None:
    """Model-trust diagnostics of model-based runs over env steps, one PNG per suite/env/algo:
    model error ε_m, policy shift ε_π, MBPO's branched bound, k, holdout error, compounding
    error, model fit time, and the evaluated policy's real return beside its return predicted by
    the model from the same start states (model exploitation)."""
    from mbrl_bench.reporting.plots import plot_metrics
    from mbrl_bench.reporting.table import RUN_KEY_COLUMNS, load_metrics

    runs, evals = _load_runs(results_dir)
    metrics = load_metrics(runs)
    if "eps_m" not in metrics.columns:
        _fail(f"no model-based diagnostics in the runs under {results_dir}")
        return
    keys = [*RUN_KEY_COLUMNS, "env_step"]
    metrics = metrics.merge(evals[[*keys, "return_mean", "model_return_mean"]], on=keys,
                            how="outer")
    written = []
    for (suite, env, algo), group in metrics.groupby(["suite", "env", "algo"]):
        if group["eps_m"].notna().any():
            cols = [c for c in DIAGNOSTICS if c in group.columns and group[c].notna().any()]
            name = f"diagnostics_{suite}_{env}_{algo}.png".replace("/", "_")
            written.append(plot_metrics(group, cols, (out or results_dir) / name,
                                        f"{algo} on {env} ({suite})"))
    if not written:
        _fail(f"no model refit has logged diagnostics yet in the runs under {results_dir}")
    for path in written:
        typer.echo(f"written: {path}")


@app.command()
def status(
    results_dir: Annotated[Path, typer.Argument(help="Folder of runs (searched recursively).")],
) -> None:
    """Where each run under RESULTS_DIR stands: complete, running (a live process holds its
    lock; host:pid shown), died (marked running, but no process holds it: rerun the suite to
    resume it),
    interrupted, or failed with its error; and its last env step with a row, of its budget."""
    from mbrl_bench.runner.store import RUN_FILE, run_status

    found = sorted(p.parent for p in results_dir.rglob(RUN_FILE))
    if not found:
        _fail(f"no runs under {results_dir} (no run.json in any subfolder)")
    counts: dict[str, int] = {}
    for run_dir in found:
        st = run_status(run_dir)
        counts[st.status] = counts.get(st.status, 0) + 1
        step = ("-" if st.env_step is None else str(st.env_step)) + (
            "" if st.budget is None else f"/{st.budget}")
        typer.echo(f"{st.status:<12} {step:>14}  {run_dir.relative_to(results_dir)}"
                   + (f"  (process {st.process})" if st.process else "")
                   + (f"  {st.error}" if st.error else ""))
    typer.echo("total: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))


def _unwrapped(doc: str) -> str:
    """``doc`` with the lines of each paragraph joined: Typer's rich help keeps a docstring's
    line breaks, which would show mid-sentence in ``bench --help``."""
    return "\n\n".join(" ".join(line.strip() for line in para.splitlines())
                       for para in inspect.cleandoc(doc).split("\n\n"))


for _info in app.registered_commands:
    if _info.help is None and _info.callback is not None and _info.callback.__doc__:
        _info.help = _unwrapped(_info.callback.__doc__)


def main() -> None:  # pragma: no cover
    os.environ.setdefault("MUJOCO_GL", "egl")
    sys.exit(app())
