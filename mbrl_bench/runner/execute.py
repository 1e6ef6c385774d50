"""Expanding a suite into runs, checking them before anything starts, and executing them.

Executors: in this process (``workers=1``), a local process pool, or a Ray cluster. Every run is
executed by :func:`execute_run`, which skips finished runs, resumes unfinished ones from their
checkpoint, and records failures (with their error) without stopping the suite.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import multiprocessing
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from mbrl_bench.config import to_dict
from mbrl_bench.envs.make import SpaceKind, check_spaces, make_env, space_kind
from mbrl_bench.envs.termination import termination_fn_for
from mbrl_bench.errors import ConfigError, UnsupportedEnvError
from mbrl_bench.parts import LOOPS
from mbrl_bench.runner.spec import RunSpec
from mbrl_bench.runner.store import (
    CHECKPOINT_FILE,
    LOCK_FILE,
    RunStore,
    code_version,
    now,
    versions,
)
from mbrl_bench.spec import EnvEntry, Recipe, Suite, load_recipe
from mbrl_bench.sweep import SetOption, Settings, sweep_points

Executor = Literal["local", "ray"]
LOST_WORKER = ("a worker process died (killed, or out of memory) and the process pool ended "
               "with it; run the same command again to resume from the last checkpoint")
MODEL_KINDS = ("model", "rollout", "planner")


@dataclass(frozen=True)
class Outcome:
    run_id: str
    status: str
    """complete | skipped | failed | interrupted | busy (held by another process) | lost (its
    worker process or Ray node died; the same command again resumes it)"""
    error: str | None = None


def expand(
    suite: Suite, algos: Sequence[str], seeds: Sequence[int], steps: int | None = None,
    env_filter: str | None = None, extra_dirs: tuple[Path, ...] = (),
    progress: Callable[[str], None] = print, sets: Sequence[SetOption] = (),
) -> list[RunSpec]:
    """All runs of ``suite`` × ``algos`` × the sweep of ``sets`` × ``seeds`` (recipes resolved
    per environment, each ``--set`` applied last).

    ``steps`` replaces every budget; ``env_filter`` is a glob or substring on name or id.
    A suite may mix tasks of different kinds (continuous control and tabular): a pair whose
    environment's spaces do not suit the recipe's loop is skipped, and one ``progress`` line
    names every skipped pair. It is an error if no run is left, or if an environment's spaces
    suit no loop at all.
    """
    entries = list(suite.envs)
    if env_filter:
        entries = [e for e in entries if any(
            fnmatch.fnmatch(s, env_filter) or env_filter in s for s in (e.label, e.id))]
        if not entries:
            raise ConfigError(suite.name, "--env", f"no environment of the suite matches "
                              f"{env_filter!r}; it has: {', '.join(e.label for e in suite.envs)}")
    if steps is not None:
        if steps <= 0:
            raise ConfigError("--steps", "", "a positive number of environment steps")
        entries = [e.with_budget(steps) for e in entries]
    if not algos:
        raise ConfigError(suite.name, "algorithms", "no algorithms: give --algos or list "
                          "`algorithms` in the suite")
    names = [Path(a).stem for a in algos]
    if len(set(names)) != len(names):
        raise ConfigError(suite.name, "--algos", f"two recipes share a name ({', '.join(algos)})"
                          "; their runs would share folders")
    points = sweep_points(sets)
    specs: list[RunSpec] = []
    skipped: list[tuple[EnvEntry, str, SpaceKind]] = []  # (entry, algo, its loop's space kind)
    kinds = {e.label: _space_kind(e) for e in entries}
    for entry in entries:
        for algo in algos:
            recipes = [_recipe_for(algo, entry, extra_dirs, point) for point in points]
            space = LOOPS.get(recipes[0].parts[0].name).factory.space
            name = Path(algo).stem
            if kinds[entry.label] != space:
                skipped.append((entry, name, space))
                continue
            specs.extend(RunSpec(suite.name, entry, name, seed, recipe, _as_set(recipe, point))
                         for recipe, point in zip(recipes, points, strict=True) for seed in seeds)
    _check_left(suite, kinds, specs, skipped)
    ids = [s.run_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ConfigError("--set", "", "two values of a setting are the same value "
                          f"({next(i for i in ids if ids.count(i) > 1)})")
    if skipped:
        progress(f"skipped {len(skipped)} environment × algorithm pair(s) whose spaces do not "
                 "suit the loop: " + ", ".join(f"{e.label} × {a}" for e, a, _ in skipped))
    return specs


def _recipe_for(algo: str, entry: EnvEntry, extra_dirs: tuple[Path, ...], settings: Settings
                ) -> Recipe:
    """``algo`` resolved for ``entry`` with the entry's ``initial_random_steps`` (unless a
    ``--set`` gives it) and ``settings`` applied."""
    recipe = load_recipe(algo, entry.id, extra_dirs, settings)
    loop_cfg = recipe.config("loop")
    if (entry.initial_random_steps is not None and hasattr(loop_cfg, "initial_random_steps")
            and "loop.initial_random_steps" not in dict(settings)):
        recipe = recipe.with_config(
            "loop", replace(loop_cfg, initial_random_steps=entry.initial_random_steps))
    return recipe


def _as_set(recipe: Recipe, settings: Settings) -> Settings:
    """``settings`` with each value as the resolved config holds it (``1`` for a float field
    is ``1.0``), so one configuration always gets one folder."""
    out = []
    for key, _ in settings:
        kind, _, field_name = key.partition(".")
        out.append((key, to_dict(getattr(recipe.config(kind), field_name))))
    return tuple(out)


def random_phase_warnings(specs: Sequence[RunSpec]) -> list[str]:
    """One line per (environment, recipe) whose budget ends inside the recipe's random-action
    phase: such runs learn nothing (a model-based one never fits its model)."""
    lines: dict[tuple[str, str], str] = {}
    for s in specs:
        random_steps = getattr(s.recipe.config("loop"), "initial_random_steps", 0)
        if s.env.budget <= random_steps:
            lines[(s.env.label, s.algo)] = (
                f"{s.env.label} × {s.algo}: the budget ({s.env.budget} steps) ends inside the "
                f"{random_steps} random-action steps, so nothing will be learned (raise --steps, "
                "or set initial_random_steps in the suite)")
    return list(lines.values())


def _space_kind(entry: EnvEntry) -> SpaceKind:
    env = make_env(entry.id, entry.kwargs)
    try:
        kind = space_kind(env)
        if kind is None:
            raise UnsupportedEnvError(
                f"{entry.label} ({entry.id}): no loop can run observations "
                f"{env.observation_space} with actions {env.action_space} (box loops need flat "
                "Box observations and bounded Box actions, the tabular loop Discrete ones)")
        return kind
    finally:
        env.close()


def _check_left(suite: Suite, kinds: dict[str, SpaceKind], specs: list[RunSpec],
                skipped: list[tuple[EnvEntry, str, SpaceKind]]) -> None:
    """An error naming what the algorithms need and what the environments have, if no run is
    left."""
    if specs:
        return
    need = ", ".join(f"{a} needs {k}" for a, k in dict((a, k) for _, a, k in skipped).items())
    have = ", ".join(f"{label} is {k}" for label, k in kinds.items())
    raise ConfigError(suite.name, "--algos", f"no algorithm suits the selected environments' "
                      f"spaces ({need}; {have})")


def same_run(spec: RunSpec, meta: dict[str, Any] | None, has_checkpoint: bool
             ) -> tuple[str | None, bool]:
    """Whether a run folder's ``run.json`` (``meta``; None for a new folder) holds ``spec``'s
    run: (why not, or None; whether it holds it at a smaller budget, e.g. made with a smaller
    ``--steps``, so that the run continues from its last checkpoint to ``spec``'s budget).

    A smaller budget continues only from a checkpoint written at it, and only when it lies on
    the evaluation and log schedule: the loops also evaluate and log at their budget, so an
    off-schedule one would leave rows that a run made at the larger budget in one go has not.
    """
    if meta is None or meta.get("config_hash") == spec.config_hash:
        return None, False
    recorded, budget = spec.recorded_budget(meta), spec.env.budget
    if recorded is None:
        return (f"this folder holds a run of a different configuration "
                f"({meta.get('config_hash')} != {spec.config_hash}); use another --out or "
                "remove the folder"), False
    here = f"this folder holds this run at a budget of {recorded} steps"
    if recorded > budget:
        return (f"{here}, more than {budget}; ask for {recorded} or more (--steps) to "
                "continue it, or use another --out"), False
    log_every = getattr(spec.recipe.parts[0].config, "log_every", None)
    if any(every and recorded % every for every in (spec.env.eval_every, log_every)):
        return (f"{here}, off its evaluation or log schedule (every {spec.env.eval_every} / "
                f"{log_every} steps): continued to {budget}, its rows would not be those of "
                "one run; use another --out"), False
    if not has_checkpoint:
        return f"{here} and no checkpoint to continue it from; use another --out", False
    return None, True


def preflight(specs: Sequence[RunSpec], out: Path, device: str = "cpu") -> None:
    """Fail before any run starts if an env does not suit its loop, a model-based recipe has no
    termination function for its env, a run folder holds a run of another configuration (or
    this run at a larger budget than asked), or a started run would resume on another kind of
    device than it started on (``device``: the resolved device, or ``auto``)."""
    checked: set[tuple[str, str, bool, str]] = set()
    for spec in specs:
        loop = LOOPS.get(spec.recipe.parts[0].name).factory
        needs_term = loop.needs_termination and any(
            spec.recipe.part(k) is not None for k in MODEL_KINDS)
        key = (spec.env.label, loop.space, needs_term, spec.algo)
        if key not in checked:
            checked.add(key)
            env = make_env(spec.env.id, spec.env.kwargs)
            try:
                check_spaces(env, loop.space)
                if needs_term:
                    termination_fn_for(env)
                if loop.check_env is not None:
                    loop.check_env(spec.recipe, env)
            finally:
                env.close()
        meta = RunStore(spec.run_dir(out)).read_meta()
        has_checkpoint = (spec.run_dir(out) / CHECKPOINT_FILE).exists()
        refused, extends = same_run(spec, meta, has_checkpoint)
        if refused:
            raise ConfigError(str(spec.run_dir(out)), "config_hash", refused)
        resumes = (meta is not None and has_checkpoint and meta.get("status") != "failed"
                   and (extends or meta.get("status") != "complete"))
        if resumes and meta is not None and device != "auto":
            problem = device_mismatch({**meta, "status": "running"} if extends else meta,
                                      device)
            if problem:
                raise ConfigError(str(spec.run_dir(out)), "--device", problem)


CHECK_DEVICE_ENV = "MBRL_BENCH_CHECK_DEVICE"
"""Set to 1, every loop runs with torch's default device set to ``meta``: a tensor a loop or
a part creates without naming the run's device is then a meta tensor, and the first operation
that mixes it with real data raises. The tests run every shipped recipe so (on a machine
without a GPU this is how "no tensor on the wrong device" is checked)."""


def device_check() -> Any:
    """The context a loop runs in: torch's default device ``meta`` when ``$CHECK_DEVICE_ENV``
    is 1, else nothing."""
    import contextlib

    if os.environ.get(CHECK_DEVICE_ENV) != "1":
        return contextlib.nullcontext()
    import torch

    return torch.device("meta")


def device_mismatch(meta: dict[str, Any], device: str) -> str | None:
    """Why a run recorded in ``meta`` cannot continue on ``device`` (None: it can): a run that
    started on one kind of device (CPU or GPU) continues on that kind, so that its numbers come
    from one arithmetic."""
    started = meta.get("device") or "cpu"  # runs from before devices were recorded: the CPU
    kind = str(started).split(":")[0]
    if meta.get("status") != "complete" and kind != device.split(":")[0]:
        return (f"this run started on {started}; resume it with --device {kind}, or remove "
                f"its folder to restart it on {device}")
    return None


def execute_run(spec: RunSpec, out: Path, progress: Callable[[str], None] = print,
                retry_failed: bool = False, lock_wait_s: float = 0.0,
                device: str = "cpu", loggers: tuple[str, ...] = ()) -> Outcome:
    """Run (or resume, or skip) one run on ``device`` (a setting of
    :func:`~mbrl_bench.devices.resolve_device`), recording its status, device and any error in
    ``run.json``.

    The run's lock is taken without waiting, or for up to ``lock_wait_s`` seconds (a Ray task
    retried after its node was lost waits for the lost process's lock to be released).
    ``loggers`` (``tensorboard``, ``wandb``) mirror the run's rows into those trackers.
    """
    with contextlib.ExitStack() as locks:
        began = _claim(spec, out, locks, progress, retry_failed, lock_wait_s, device, loggers)
        return began if isinstance(began, Outcome) else _run_attempt(began, progress)


def _claim(spec: RunSpec, out: Path, locks: contextlib.ExitStack, progress: Callable[[str], None],
           retry_failed: bool, lock_wait_s: float, device: str,
           loggers: tuple[str, ...]) -> _Attempt | Outcome:
    """Take ``spec``'s lock (held until ``locks`` closes) and begin its attempt; an
    :class:`Outcome` instead when there is nothing to run here (busy elsewhere, complete,
    failed, or refused)."""
    store = RunStore(spec.run_dir(out), loggers)
    store.dir.mkdir(parents=True, exist_ok=True)
    if not _take_lock(locks.enter_context((store.dir / LOCK_FILE).open("a")), lock_wait_s):
        progress(f"{spec.run_id}: running in another process; skipped here")
        return Outcome(spec.run_id, "busy")
    return _Attempt.begin(spec, store, progress, retry_failed, device)


def _take_lock(lock: Any, wait_s: float) -> bool:
    """Take a run's lock file, waiting up to ``wait_s`` seconds; False if another process
    holds it (one process per run: another `bench run` on the same folder skips it)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)


def _run_attempt(began: _Attempt, progress: Callable[[str], None]) -> Outcome:
    """Run one attempt's loop to its end and record how it ended."""
    from mbrl_bench.runner.compose import LOOP_RUNNERS

    try:
        began.record_start()
        c = began.compose(progress)
        with device_check():
            LOOP_RUNNERS[began.spec.recipe.parts[0].name](c, _HeldWrites(began.store), progress)
    except KeyboardInterrupt:
        began.finish("interrupted")
        raise
    except Exception as e:
        return began.failed(e, progress)
    return began.finish("complete")


def side_by_side_refusal(spec: RunSpec) -> str | None:
    """Why ``spec``'s recipe cannot train seeds side by side (None: it can). Today: model-free
    SAC on the policy loop (:mod:`~mbrl_bench.loops.policy_seeds`)."""
    recipe = spec.recipe
    opt = recipe.part("optimizer")
    if recipe.parts[0].name != "policy" or opt is None or opt.name != "sac":
        return "side by side trains SAC on the policy loop only"
    if any(recipe.part(k) is not None for k in MODEL_KINDS):
        return "side by side trains model-free SAC only (this recipe has a model)"
    return None


def side_by_side_groups(specs: Sequence[RunSpec], progress: Callable[[str], None] = print
                        ) -> list[list[RunSpec]]:
    """``specs`` as groups to run side by side: the seeds of one suite, task, recipe and
    settings form a group when the recipe can (:func:`side_by_side_refusal`); any other run is
    a group of one, and one ``progress`` line per recipe says why."""
    groups: dict[tuple[str, str, str], list[RunSpec]] = {}
    alone: list[list[RunSpec]] = []
    told: set[str] = set()
    for spec in specs:
        why = side_by_side_refusal(spec)
        if why is None:
            groups.setdefault((spec.suite, spec.env.label, spec.label), []).append(spec)
            continue
        alone.append([spec])
        if spec.algo not in told:
            told.add(spec.algo)
            progress(f"{spec.algo}: {why}; its runs go one at a time")
    return [*groups.values(), *alone]


def execute_side_by_side(specs: Sequence[RunSpec], out: Path,
                         progress: Callable[[str], None] = print, retry_failed: bool = False,
                         lock_wait_s: float = 0.0, device: str = "cpu",
                         loggers: tuple[str, ...] = ()) -> list[Outcome]:
    """Run the seeds ``specs`` (one group of :func:`side_by_side_groups`) side by side in this
    process, each recorded in its own folder as :func:`execute_run` records it; a group of one
    (or of one left to run) runs alone."""
    if len(specs) == 1:
        return [execute_run(specs[0], out, progress, retry_failed, lock_wait_s, device,
                            loggers)]
    outcomes: dict[str, Outcome] = {}
    with contextlib.ExitStack() as locks:
        attempts: list[_Attempt] = []
        for spec in specs:
            began = _claim(spec, out, locks, progress, retry_failed, lock_wait_s, device,
                           loggers)
            if isinstance(began, Outcome):
                outcomes[spec.run_id] = began
            else:
                attempts.append(began)
        if len(attempts) == 1:
            outcomes[attempts[0].spec.run_id] = _run_attempt(attempts[0], progress)
        elif attempts:
            outcomes.update(_run_group(attempts, progress))
    return [outcomes[s.run_id] for s in specs]


def _run_group(attempts: list[_Attempt], progress: Callable[[str], None]) -> dict[str, Outcome]:
    """Run attempts (locks held) side by side and record how each ended. A seed that fails on
    its own is recorded failed and the others go on side by side from their last checkpoints;
    seeds whose checkpoints are at different steps run one at a time."""
    from mbrl_bench.loops.policy_seeds import SeedFailure, UnevenSeeds, run_policy_loop_seeds

    ids = [a.spec.run_id for a in attempts]
    progress(f"side by side: {', '.join(ids)}")
    try:
        for a in attempts:
            a.record_start(ids)
        cs = []
        for i, a in enumerate(attempts):
            try:
                cs.append(a.compose(progress))
            except Exception as e:
                raise SeedFailure(i, e) from e
        with device_check():
            run_policy_loop_seeds(cs, [_HeldWrites(a.store) for a in attempts], progress)
    except KeyboardInterrupt:
        _record_ends([a for a in attempts if a.start_recorded], "interrupted")
        raise
    except UnevenSeeds as e:
        progress(f"side by side: the seeds' checkpoints are at different steps ({e}); they "
                 "run one at a time")
        return _one_at_a_time(attempts, progress)
    except SeedFailure as e:
        bad = attempts[e.index]
        rest = [a for a in attempts if a is not bad]
        try:
            outcomes = {bad.spec.run_id: bad.failed(e.error, progress)}
            for a in rest:  # reopened on resume, which drops their rows after the checkpoint
                a.store.close_trackers()
            progress(f"side by side: {bad.spec.run_id} failed; the others go on from their "
                     "last checkpoints")
        except KeyboardInterrupt:
            _record_ends([a for a in rest if a.start_recorded], "interrupted")
            raise
        return outcomes | (_one_at_a_time(rest, progress) if len(rest) == 1
                           else _run_group(rest, progress))
    except Exception as e:  # in the shared update: every seed's failure
        tb = traceback.format_exc(limit=-3)
        progress(f"side by side: FAILED: {type(e).__name__}: {e}")
        error = f"{type(e).__name__}: {e}\n{tb}"
        return {a.spec.run_id: Outcome(a.spec.run_id, "failed", error) for a in attempts} | (
            _record_ends([a for a in attempts if a.start_recorded], "failed", error))
    return _record_ends(attempts, "complete")


def _one_at_a_time(attempts: list[_Attempt], progress: Callable[[str], None]
                   ) -> dict[str, Outcome]:
    """Run recorded attempts one after another; on an interrupt, those not yet run are
    recorded interrupted too."""
    outcomes = {}
    for i, a in enumerate(attempts):
        try:
            outcomes[a.spec.run_id] = _run_attempt(a, progress)
        except KeyboardInterrupt:
            _record_ends(attempts[i + 1:], "interrupted")
            raise
    return outcomes


def _record_ends(attempts: Sequence[_Attempt], status: str, error: str | None = None
                 ) -> dict[str, Outcome]:
    """Record how every attempt ended, all under one hold of interrupts."""
    with _uninterruptible():
        return {a.spec.run_id: a.record_end(status, error) for a in attempts}


@dataclass
class _Attempt:
    """One attempt at a run whose lock is held: from the checks of its folder to the status
    it ends with (:meth:`begin`, :meth:`record_start`, :meth:`compose`, :meth:`finish`)."""

    spec: RunSpec
    store: RunStore
    meta: dict[str, Any] | None
    continued: list[dict[str, Any]]
    dev: Any
    """The resolved ``torch.device``."""
    prior: float
    """Wall-clock seconds of earlier attempts."""
    started: float = 0.0
    start_recorded: bool = False
    """Whether :meth:`record_start` has begun writing ``run.json`` (then an end is recorded)."""

    @classmethod
    def begin(cls, spec: RunSpec, store: RunStore, progress: Callable[[str], None],
              retry_failed: bool = False, device: str = "cpu") -> _Attempt | Outcome:
        """The attempt, or the run's outcome when it is not to run (complete, failed before,
        its folder holds another run, or it started on another kind of device)."""
        from mbrl_bench.devices import resolve_device

        meta = store.read_meta()
        has_checkpoint = (store.dir / CHECKPOINT_FILE).exists()
        refused, extends = same_run(spec, meta, has_checkpoint)
        if refused:  # checked in preflight too; here under the lock, against a newer folder
            return Outcome(spec.run_id, "failed", f"{store.dir}: {refused}")
        if meta is not None and meta.get("status") == "complete" and not extends:
            return Outcome(spec.run_id, "skipped")
        if meta is not None and meta.get("status") == "failed" and not retry_failed:
            # a failure (NaN, an exception) is usually deterministic: rerun only when asked
            progress(f"{spec.run_id}: failed before; not rerun (--retry-failed resumes it from "
                     "its last checkpoint, or from scratch without one)")
            return Outcome(spec.run_id, "failed", meta.get("error"))
        continued = list((meta or {}).get("continued_from") or [])
        if extends and meta is not None:
            # this run at a smaller budget (another --steps): it continues from the checkpoint
            # of that budget's final evaluation, as if never stopped there; run.json keeps what
            # it was (budget, code, end) before
            progress(f"{spec.run_id}: continues from its budget of {meta['budget']} steps to "
                     f"{spec.env.budget}")
            continued.append({k: meta.get(k) for k in ("budget", "code_version", "ended_at")})
        try:
            dev = resolve_device(device)
        except ConfigError as e:
            return Outcome(spec.run_id, "failed", str(e))
        fresh = meta is None or not has_checkpoint
        problem = None if fresh or meta is None else device_mismatch(
            {**meta, "status": "running"} if extends else meta, str(dev))
        if problem:
            return Outcome(spec.run_id, "failed", f"{store.dir}: {problem}")
        if fresh:
            store.reset_files()
        return cls(spec, store, meta, continued, dev,
                   float((meta or {}).get("wall_clock_s") or 0.0), time.perf_counter())

    def record_start(self, side_by_side: Sequence[str] = ()) -> None:
        """Write ``run.json`` as running (``side_by_side``: the run ids of its group)."""
        from mbrl_bench.devices import describe

        meta, store = self.meta, self.store
        self.started = time.perf_counter()
        with _uninterruptible():  # a SIGTERM meanwhile interrupts once the record is written
            self.start_recorded = True  # (before the write: an interrupt's end record needs it)
            store.write_meta({
                **self.spec.meta(), "status": "running",
                "started_at": (meta or {}).get("started_at", now()), "ended_at": None,
                "attempts": (meta or {}).get("attempts", 0) + 1, "error": None,
                "host": socket.gethostname(), "pid": os.getpid(), **describe(self.dev),
                "versions": versions(), "code_version": code_version(),
                "wall_clock_s": (meta or {}).get("wall_clock_s", 0.0),
                **({"loggers": list(store.loggers)} if store.loggers else {}),
                **({"continued_from": self.continued} if self.continued else {}),
                **({"side_by_side": list(side_by_side)} if side_by_side else {}),
            })

    def compose(self, progress: Callable[[str], None]) -> Any:
        """The run's components (``runner/compose.py``), with a warning for bf16 on a device
        without bf16 units."""
        from mbrl_bench.devices import has_bf16_units
        from mbrl_bench.runner.compose import compose

        spec, dev = self.spec, self.dev
        c = compose(spec, dev)
        for kind in ("model", "optimizer"):
            part = spec.recipe.part(kind)
            if getattr(part and part.config, "precision", "fp32") == "bf16" and not (
                    has_bf16_units(dev)):
                progress(f"{spec.run_id}: warning: {kind}.precision = bf16, but {dev} has no "
                         "bf16 matrix units (AVX512-BF16, AMX or a bf16 GPU): its bf16 products "
                         "are emulated and slower than fp32")
        return c

    def finish(self, status: str, error: str | None = None) -> Outcome:
        """Record how the attempt ended (a SIGTERM meanwhile interrupts once it is written)."""
        with _uninterruptible():
            return self.record_end(status, error)

    def record_end(self, status: str, error: str | None = None) -> Outcome:
        """:meth:`finish` without holding interrupts (for a caller that holds them)."""
        self.store.update_meta(status=status, error=error, ended_at=now(),
                               wall_clock_s=self.prior + time.perf_counter() - self.started)
        self.store.close_trackers()
        return Outcome(self.spec.run_id, status, error)

    def failed(self, e: BaseException, progress: Callable[[str], None]) -> Outcome:
        tb = traceback.format_exc(limit=-3)
        progress(f"{self.spec.run_id}: FAILED: {type(e).__name__}: {e}")
        return self.finish("failed", f"{type(e).__name__}: {e}\n{tb}")


_HOLD = False
"""True while a run's record is written (and from an interrupt until it is): SIGTERM waits."""
_PENDING = False
"""A SIGTERM came while held: it interrupts when the hold ends."""


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM's handler, and SIGINT's in the process that runs ``bench run``: interrupt now,
    or, while held, once the hold ends. A second Ctrl-C while one waits interrupts at once
    (a way out of a process that hangs)."""
    global _HOLD, _PENDING
    if _HOLD:
        if _PENDING and signum == signal.SIGINT:
            _PENDING = False  # this raise is the waiting interrupt's
            raise KeyboardInterrupt
        _PENDING = True
        return
    _HOLD = True  # until the interrupted run has recorded itself (a pool may signal twice)
    raise KeyboardInterrupt


@contextlib.contextmanager
def _uninterruptible() -> Iterator[None]:
    """Hold SIGTERM's interruption while a run's record is written or a pool starts its
    workers: it takes effect (KeyboardInterrupt) at the end."""
    global _HOLD, _PENDING
    _HOLD = True
    try:
        yield
    finally:
        _HOLD = False
        if _PENDING:
            _PENDING = False
            raise KeyboardInterrupt


class _HeldWrites:
    """The run store as a loop sees it: a SIGTERM that comes while a checkpoint or a row is
    being written interrupts once the write is complete (an interrupt inside ``torch.save``
    left a half-written zip, and the run recorded failed instead of interrupted)."""

    def __init__(self, store: RunStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        with _uninterruptible():
            self._store.save_checkpoint(state)

    def append_eval(self, row: dict[str, Any]) -> None:
        with _uninterruptible():
            self._store.append_eval(row)

    def append_metrics(self, row: dict[str, Any]) -> None:
        with _uninterruptible():
            self._store.append_metrics(row)

    def extend_metrics(self, rows: list[dict[str, Any]]) -> None:
        with _uninterruptible():
            self._store.extend_metrics(rows)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within it, SIGTERM (a cluster scheduler's time limit, ``kill``) interrupts as Ctrl-C does:
    the run in progress records itself ``interrupted`` and closes its trackers before the
    process ends, instead of being left marked running (``died``). Both wait while a run
    writes its record, a checkpoint or a row (an interrupt inside ``torch.save`` left a broken
    file and the run recorded failed). Main thread only; the local executors (on Ray,
    ``ray.init`` installs Ray's own SIGTERM handling)."""
    global _HOLD, _PENDING
    previous = signal.signal(signal.SIGTERM, _interrupt)
    previous_int = signal.signal(signal.SIGINT, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        _HOLD = _PENDING = False


def _die_with_parent(parent: int) -> None:
    """Make a local worker die when the process that started it dies, even by ``kill -9``
    (Linux ``PR_SET_PDEATHSIG``): no orphan keeps training or holding a run's lock."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: workers end when their parent's pipe closes
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


_WORKER_DEVICE: str | None = None
"""The GPU a local pool worker is bound to (set once per worker process by
:func:`_init_worker`); None: the run's device setting as given."""


def _init_worker(parent: int, gpu_slots: Any = None) -> None:
    """Pool worker set-up: die with the parent; with ``gpu_slots`` (a queue of device names,
    one per worker), take one and run every run of this worker on it."""
    global _WORKER_DEVICE, _POOL_WORKER
    _die_with_parent(parent)
    _POOL_WORKER = True
    # Ctrl-C reaches the driver, which ends its workers with SIGTERM: one interrupt each
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_sigterm)
    if gpu_slots is not None:
        _WORKER_DEVICE = gpu_slots.get()
        import torch

        torch.cuda.set_device(_WORKER_DEVICE)  # no context on another GPU by default


_IN_RUN = False
"""Whether this pool worker is executing a run (its SIGTERM handler's question)."""
_POOL_WORKER = False
"""Whether this process is a local pool's worker (not the driver, not a Ray worker)."""


def _worker_sigterm(signum: int, frame: Any) -> None:
    """A pool worker's SIGTERM: in a run, interrupt it (it records itself interrupted, then
    :func:`_worker` ends the process); idle (the pool being closed), end at once."""
    if not _IN_RUN:
        os._exit(128 + signal.SIGTERM)
    _interrupt(signum, frame)


def _worker(spec: RunSpec | list[RunSpec], out: Path, threads: int, retry_failed: bool = False,
            lock_wait_s: float = 0.0, device: str = "cpu", loggers: tuple[str, ...] = ()
            ) -> Any:
    """A run's outcome; for a list of specs (seeds side by side), the list of their outcomes."""
    import torch

    global _IN_RUN
    torch.set_num_threads(threads)
    _IN_RUN = True
    try:
        run = execute_side_by_side if isinstance(spec, list) else execute_run
        return run(spec, out, progress=lambda s: print(s, flush=True),  # type: ignore[arg-type]
                   retry_failed=retry_failed, lock_wait_s=lock_wait_s,
                   device=_WORKER_DEVICE or device, loggers=loggers)
    except KeyboardInterrupt:  # the run is recorded interrupted: a pool worker ends here
        if _POOL_WORKER:
            os._exit(128 + signal.SIGTERM)
        raise
    finally:
        _IN_RUN = False


def _close(pool: ProcessPoolExecutor) -> None:
    """End the pool's workers and the pool without waiting on it: in CPython 3.11,
    ``shutdown(wait=True)`` (and the exit hook that joins the pool) hangs for ever if a worker
    died while idle, e.g. killed after its last run. Every outcome is in hand (or the driver is
    being interrupted), so the workers are terminated."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(10)


def gpu_slots(device: str, runs_per_gpu: int) -> list[str]:
    """One device name per local worker for a GPU ``device``: ``runs_per_gpu`` workers on each
    visible GPU (or on the one ``cuda:N`` names); empty for the CPU."""
    from mbrl_bench.devices import resolve_device

    dev = resolve_device(device)
    if dev.type != "cuda":
        return []
    import torch

    gpus = [dev.index] if dev.index is not None else list(range(torch.cuda.device_count()))
    return [f"cuda:{g}" for _ in range(runs_per_gpu) for g in gpus]


def run_all(
    specs: Sequence[RunSpec], out: Path, workers: int = 1, executor: Executor = "local",
    threads: int | None = None, progress: Callable[[str], None] = print,
    retry_failed: bool = False, address: str | None = None, device: str = "cpu",
    runs_per_gpu: int = 1, loggers: tuple[str, ...] = (), side_by_side: bool = False,
) -> list[Outcome]:
    """Execute ``specs`` on ``device`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``); a failed run
    is recorded and the others go on. ``address`` is the Ray cluster's (``executor="ray"``;
    default ``$RAY_ADDRESS``, else a local Ray instance). ``loggers`` mirror each run's rows
    into TensorBoard or W&B (:mod:`~mbrl_bench.runner.trackers`).

    On GPUs the local pool has ``runs_per_gpu`` workers per visible GPU (``workers`` is then
    ignored), each bound to its GPU for its life; on Ray (``device="cuda"``) each task asks for
    ``1 / runs_per_gpu`` of a GPU and Ray assigns it one.

    ``side_by_side``: the seeds of each recipe that can (:func:`side_by_side_groups`) train
    together in one process (:func:`execute_side_by_side`); a pool runs one group per worker.
    """
    from mbrl_bench.devices import check_device

    check_device(device)
    if runs_per_gpu < 1:
        raise ConfigError("--runs-per-gpu", str(runs_per_gpu), "a positive integer")
    if side_by_side and executor == "ray":
        raise ConfigError("--side-by-side", "", "runs in this process or a local pool "
                          "(--workers), not with --executor ray")
    slots = gpu_slots(device, runs_per_gpu) if executor == "local" else []
    local_device = slots[0] if slots else "cpu"  # the in-process run's (the pool's: per worker)
    preflight(specs, out, local_device if executor == "local" else device)
    if slots:
        workers = len(slots)
    cores = os.cpu_count() or 1
    # one thread pool per core at most: oversubscribed OpenMP threads spin and slow runs 5-10x
    env_threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if executor == "ray":  # one thread per run by default: a node runs as many runs as cores
        threads = threads or env_threads or 1
    threads = threads or env_threads or max(1, cores // max(workers, 1))
    if executor == "ray":
        return _run_ray(specs, out, threads, retry_failed, address, progress, device,
                        runs_per_gpu, loggers)
    groups: list[RunSpec | list[RunSpec]] = (
        list(side_by_side_groups(specs, progress)) if side_by_side else list(specs))
    if workers <= 1:
        import torch

        torch.set_num_threads(threads)
        if side_by_side:
            return _in_order(specs, [o for g in groups for o in execute_side_by_side(
                g, out, progress, retry_failed, device=local_device,  # type: ignore[arg-type]
                loggers=loggers)])
        return [execute_run(s, out, progress, retry_failed, device=local_device,
                            loggers=loggers) for s in specs]
    return _run_pool(specs, groups, out, workers, threads, retry_failed, slots, loggers)


def _run_pool(specs: Sequence[RunSpec], groups: Sequence[RunSpec | list[RunSpec]], out: Path,
              workers: int, threads: int, retry_failed: bool, slots: list[str],
              loggers: tuple[str, ...]) -> list[Outcome]:
    """Each of ``groups`` (a run, or seeds side by side) in a worker of a local process pool
    (``slots``: one GPU per worker, or none); the outcomes in the order of ``specs``."""
    ctx = multiprocessing.get_context("spawn")
    queue = None
    if slots:
        queue = ctx.Queue()
        for slot in slots:
            queue.put(slot)
    outcomes = []
    pool = None
    try:
        with _uninterruptible():  # workers start in submit(): none may escape the pool's list
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                       initializer=_init_worker, initargs=(os.getpid(), queue))
            futures = {pool.submit(_worker, g, out, threads, retry_failed, 0.0, "cpu",
                                   loggers): g for g in groups}
        for f in as_completed(futures):
            group = futures[f]
            ids = [s.run_id for s in group] if isinstance(group, list) else [group.run_id]
            try:
                result = f.result()
                outcomes.extend(result if isinstance(result, list) else [result])
            except BrokenProcessPool:  # a worker was killed: the pool ends every run it had
                outcomes.extend(Outcome(i, "lost", LOST_WORKER) for i in ids)
            except Exception as e:  # raised outside the run's own guard (e.g. its run.json)
                outcomes.extend(Outcome(i, "failed", f"{type(e).__name__}: {e}") for i in ids)
    finally:
        if pool is not None:
            _close(pool)
    return _in_order(specs, outcomes)


def _in_order(specs: Sequence[RunSpec], outcomes: list[Outcome]) -> list[Outcome]:
    order = {s.run_id: i for i, s in enumerate(specs)}
    return sorted(outcomes, key=lambda o: order[o.run_id])


RAY_TASK_RETRIES = 5
"""Times a run's Ray task is rerun after its worker or node is lost (each resumes the run from
its last checkpoint); a run that raises is recorded as failed and not retried."""
RAY_LOCK_WAIT_S = 180.0
"""How long a Ray task waits for a run's lock: a lost node's process may hold it until it is
killed (on a shared filesystem, until the file server sees the node gone)."""


def _probe(address: str, timeout_s: float = 5.0) -> None:
    """A one-line error at once if nothing listens at a ``host:port`` address (Ray itself
    retries for minutes); ``auto`` and ``ray://`` addresses are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ConfigError("--address", address, f"no Ray cluster answers there ({e}); start "
                          "one with `ray start --head` (see the README, On a cluster)") from e


def _run_ray(specs: Sequence[RunSpec], out: Path, threads: int, retry_failed: bool,
             address: str | None, progress: Callable[[str], None], device: str = "cpu",
             runs_per_gpu: int = 1, loggers: tuple[str, ...] = ()) -> list[Outcome]:
    """Each run a Ray task asking for ``threads`` CPUs (and ``1 / runs_per_gpu`` GPU with
    ``device="cuda"``); ``out`` must be on a filesystem every node sees (the runs' locks,
    checkpoints and rows are files there)."""
    if device.startswith("cuda:"):
        raise ConfigError("--device", device, "with --executor ray, give cuda: Ray assigns "
                          "each run its GPU")
    try:
        import ray
        from ray.exceptions import RayError, RayTaskError
    except ImportError as e:
        raise ConfigError("--executor", "ray", "Ray is not installed: pip install "
                          "'mbrl-bench[ray]' (and start or join a cluster)") from e
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _probe(address)
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ConfigError("--address", str(address), f"no Ray cluster answers there "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0.0))
    if device == "cuda" and cluster_gpus == 0:
        raise ConfigError("--device", device, "the Ray cluster has no GPU (its runs could never "
                          "be scheduled); use --device cpu or auto")
    if device == "auto":  # the cluster decides: Ray hides GPUs from tasks that ask for none
        device = "cuda" if cluster_gpus > 0 else "cpu"
    gpus = 1.0 / runs_per_gpu if device == "cuda" else 0.0
    remote = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=RAY_TASK_RETRIES,
                        retry_exceptions=False)(_worker)
    pending = {remote.remote(s, out.resolve(), threads, retry_failed,  # type: ignore[call-arg]
                             RAY_LOCK_WAIT_S, device, loggers): s
               for s in specs}
    outcomes: dict[str, Outcome] = {}
    while pending:
        [ref], _ = ray.wait(list(pending), num_returns=1)
        spec = pending.pop(ref)
        try:
            outcomes[spec.run_id] = ray.get(ref)
        except RayTaskError as e:  # raised in the task, outside the run's own guard: no retry
            line = str(e).strip().splitlines()[-1][:300]
            outcomes[spec.run_id] = Outcome(spec.run_id, "failed", line)
        except RayError as e:  # its worker or node was lost more than RAY_TASK_RETRIES times
            line = str(e).strip().splitlines()[0][:300]
            progress(f"{spec.run_id}: LOST: {type(e).__name__}: {line}")
            outcomes[spec.run_id] = Outcome(
                spec.run_id, "lost", f"lost {RAY_TASK_RETRIES + 1} times with its Ray worker "
                f"({type(e).__name__}: {line}); run the same command again to resume from its "
                "last checkpoint")
    return [outcomes[s.run_id] for s in specs]
