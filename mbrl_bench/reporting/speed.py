"""Speed figures as rows, and the check of new figures against the committed ones.

``benchmarks/speed.py`` times each algorithm per phase, ours against its peers, and writes one
row per timed quantity and repeat: ``cpu`` (the CPU's model name, torch's CPU capability and
its bf16 and AMX units, :func:`cpu_id`), ``threads``, ``torch``,
``algo``, ``task``, ``settings`` (the benchmark's own settings for that algorithm: steps timed,
updates per step, ...), ``lib``, ``precision``, ``phase``, ``unit``, ``rep`` and ``value``.
Every value is a time (lower is faster). The committed files (``results/reference/speed/
speed-*.csv``) are the reference: :func:`regressions` says where a new measurement of ours is
more than a tolerance slower than the committed median on the same CPU and thread count,
at the same settings.
It only reports; a benchmark warns with it and never fails.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

FIELDS = ("cpu", "threads", "torch", "algo", "task", "settings", "lib", "precision", "phase",
          "unit", "rep", "value")
CODE = "code"
"""The column of the commit that measured a row (``code_version``); files written before it had
none and read as empty."""
OURS = "mbrl-bench"
TOLERANCE = 0.30
"""A figure of ours more than 30% slower than the committed one is reported."""

Row = Mapping[str, object]
"""One speed row (values as read from CSV, strings, or as measured)."""
Key = tuple[str, str, str, str, str, str, str, str, str]
"""cpu, threads, algo, task, settings, lib, precision, phase, unit: one timed quantity on one
machine."""


def read_cpuinfo() -> str:
    """``/proc/cpuinfo``'s text; empty where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (or the text given), ``unknown`` without."""
    for line in (read_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def cpu_id(cpuinfo: str | None = None, capability: str | None = None) -> str:
    """The CPU a speed figure belongs to: its model name, torch's CPU capability and the matrix
    units torch's capability does not name (``AMD EPYC AVX512+BF16``; ``+AMX`` for AMX tiles).
    One model name and capability can cover CPUs of differing speed: this project's "AMD EPYC"
    machines are some with AVX2 only, some with AVX-512 and AVX512-BF16, and an AVX-512 CPU
    without bf16 units multiplies bf16 an order of magnitude slower than one with them."""
    if capability is None:
        import torch
        capability = torch.backends.cpu.get_cpu_capability()
    cpuinfo = read_cpuinfo() if cpuinfo is None else cpuinfo
    flags = cpu_flags(cpuinfo)
    units = "".join(unit for unit, flag in (("+BF16", "avx512_bf16"), ("+AMX", "amx_tile"))
                    if flag in flags)
    return f"{cpu_model(cpuinfo)} {capability}{units}"


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """The CPU flags that decide matrix throughput (AVX2, AVX-512, AVX512-BF16, AMX), in
    ``/proc/cpuinfo``'s spelling, of those this CPU has."""
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    line = next((x for x in text.splitlines() if x.startswith("flags")), "")
    have = set(line.split(":", 1)[-1].split())
    return [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
            if f in have]


def read_rows(path: Path) -> list[Row]:
    """The rows of one speed CSV; a one-line error if it is not one."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [k for k in FIELDS if k not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a speed file (no column {', '.join(missing)})")
        return [{**row, CODE: row.get(CODE) or ""} for row in reader]


def read_reference(folder: Path) -> list[Row]:
    """Every committed speed row under ``folder`` (``speed-*.csv``); none if it has none."""
    return [row for path in sorted(folder.glob("speed-*.csv")) for row in read_rows(path)]


def profile_by_kind(
    events: Sequence[Any], repeats: int, kinds: Mapping[str, Sequence[str]], unit: str, per: str
) -> tuple[float, list[str]]:
    """Self time of torch.profiler's ``events`` (``prof.key_averages()``) summed by kind.

    Args:
        events: the averaged events of ``repeats`` repetitions of one unit of work.
        kinds: per kind, the operator names whose self time it sums.
        unit: ``"ms"`` or ``"s"``, the unit of every figure.
        per: what one repetition is (``"update"``, ``"planned step"``), for the lines.

    Returns:
        ``(total, lines)``: the self time per repetition, and one line per kind, one for
        everything else with the operator calls per repetition.
    """
    scale = {"ms": 1e3, "s": 1e6}[unit] * repeats  # profiler times are in microseconds
    total = sum(e.self_cpu_time_total for e in events) / scale
    self_time = {e.key: e.self_cpu_time_total / scale for e in events}
    digits = 2 if unit == "ms" else 3
    lines, counted = [], 0.0
    for name, keys in kinds.items():
        t = sum(self_time.get(k, 0.0) for k in keys)
        counted += t
        lines.append(f"  {name}: {t:.{digits}f} {unit} ({t / total:.0%})")
    calls = sum(e.count for e in events) / repeats
    lines.append(f"  everything else: {total - counted:.{digits}f} {unit} "
                 f"({(total - counted) / total:.0%}); {calls:.0f} profiled operator calls per "
                 f"{per} in all")
    return total, lines


def print_report(report: str, out: Path | None) -> None:
    """Print a benchmark's text report and, with ``out``, write it there too."""
    print(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report + "\n")


def write_rows(path: Path, rows: Iterable[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=(*FIELDS, CODE))
        w.writeheader()
        for row in rows:
            w.writerow({**{k: row[k] for k in FIELDS}, CODE: row.get(CODE, "")})


def key(row: Row) -> Key:
    return (str(row["cpu"]), str(row["threads"]), str(row["algo"]), str(row["task"]),
            str(row["settings"]), str(row["lib"]), str(row["precision"]), str(row["phase"]),
            str(row["unit"]))


def run_key(row: Row) -> tuple[str, ...]:
    """The measured run a row belongs to: its :func:`key` without phase and unit (CPU, threads,
    algorithm, task, settings, library, precision)."""
    return key(row)[:7]


def merge(existing: Sequence[Row], new: Sequence[Row]) -> list[Row]:
    """``existing`` rows with those of every run that ``new`` measured again (same
    :func:`run_key`) replaced by ``new``'s: a partial benchmark run updates its own figures and
    keeps the others."""
    again = {run_key(r) for r in new}
    return [*(r for r in existing if run_key(r) not in again), *new]


def medians(rows: Iterable[Row]) -> dict[Key, float]:
    """The median over repeats of each timed quantity."""
    values: dict[Key, list[float]] = defaultdict(list)
    for row in rows:
        values[key(row)].append(float(str(row["value"])))
    return {k: statistics.median(v) for k, v in values.items()}


def regressions(current: Sequence[Row], reference: Sequence[Row], tolerance: float = TOLERANCE,
                lib: str = OURS, ignore: Collection[tuple[str, str]] = ()) -> list[str]:
    """One line for each of ``lib``'s quantities whose median in ``current`` exceeds the
    committed median for the same CPU model, thread count, algorithm, task, settings, precision
    and phase by more than ``tolerance`` (0.3: 30% slower). ``ignore``: (algorithm, phase) pairs
    not compared (small remainders of larger timings, whose noise is relatively large).
    Quantities without a committed figure are not compared (:func:`uncovered` names them)."""
    now = medians(r for r in current if r["lib"] == lib)
    ref = medians(r for r in reference if r["lib"] == lib)
    out = []
    for k, value in sorted(now.items()):
        before = ref.get(k)
        if (before is None or before <= 0 or value <= before * (1 + tolerance)
                or (k[2], k[7]) in ignore):
            continue
        cpu, threads, algo, task, _, _, precision, phase, unit = k
        out.append(f"{algo} {task} {precision} {phase}: {value:.4g} {unit} against the committed "
                   f"{before:.4g} (+{value / before - 1:.0%}) on {cpu}, {threads} thread(s)")
    return out


def uncovered(current: Sequence[Row], reference: Sequence[Row], lib: str = OURS) -> list[str]:
    """``lib``'s measured runs (algorithm, task, precision on a CPU and thread count, at the
    benchmark's settings) that have no committed figure to compare with."""
    have = {run_key(r) for r in reference if r["lib"] == lib}
    return sorted({f"{r['algo']} {r['task']} {r['precision']} ({r['settings']}) on {r['cpu']}, "
                   f"{r['threads']} thread(s)" for r in current
                   if r["lib"] == lib and run_key(r) not in have})
