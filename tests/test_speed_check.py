"""The speed regression check of benchmarks/speed.py: rows, medians, a warning past 30% slower
on the same CPU model, silence elsewhere (no timing is measured here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mbrl_bench.reporting.speed import (
    CODE,
    cpu_flags,
    cpu_id,
    cpu_model,
    medians,
    merge,
    profile_by_kind,
    read_reference,
    read_rows,
    regressions,
    uncovered,
    write_rows,
)

CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9B14
flags\t\t: fpu sse avx2 fma avx512f avx512_bf16
"""


def rows(values: list[float], cpu: str = "AMD EPYC 9B14", lib: str = "mbrl-bench",
         phase: str = "update", threads: int = 1, settings: str = "steps=3000",
         algo: str = "sac") -> list[dict[str, object]]:
    return [{"cpu": cpu, "threads": threads, "torch": "2.13.0+cpu", "algo": algo,
             "task": "Hopper-v5", "settings": settings, "lib": lib, "precision": "fp32",
             "phase": phase, "unit": "ms", "rep": i, "value": v} for i, v in enumerate(values)]


def as_read(rs: list[dict[str, object]]) -> list[dict[str, str]]:
    """Rows as a CSV gives them back (strings)."""
    return [{k: str(v) for k, v in r.items()} for r in rs]


def test_cpu_model_and_flags_from_cpuinfo() -> None:
    assert cpu_model(CPUINFO) == "AMD EPYC 9B14"
    assert cpu_flags(CPUINFO) == ["avx2", "fma", "avx512f", "avx512_bf16"]
    assert cpu_model("processor: 0\n") == "unknown"


def test_cpu_id_tells_apart_cpus_of_one_model_name() -> None:
    assert cpu_id(CPUINFO, "AVX512") == "AMD EPYC 9B14 AVX512+BF16"
    assert cpu_id(CPUINFO, "AVX512") != cpu_id(CPUINFO, "AVX2")
    assert cpu_id(CPUINFO).startswith("AMD EPYC 9B14 ")
    # AVX-512 with and without bf16 units, and with AMX tiles, are three machines
    no_bf16 = CPUINFO.replace(" avx512_bf16", "")
    assert cpu_id(no_bf16, "AVX512") == "AMD EPYC 9B14 AVX512"
    amx = CPUINFO.replace("avx512_bf16", "avx512_bf16 amx_bf16 amx_tile")
    assert cpu_id(amx, "AVX512") == "AMD EPYC 9B14 AVX512+BF16+AMX"


def test_medians_over_repeats() -> None:
    (value,) = medians(rows([10.0, 30.0, 11.0])).values()
    assert value == 11.0


def test_warns_only_past_the_tolerance() -> None:
    ref = as_read(rows([10.0, 10.0, 10.0]))
    assert regressions(rows([12.9, 13.0, 12.8]), ref) == []  # median +29%
    (line,) = regressions(rows([13.2, 13.1, 13.5]), ref)  # median +32%
    assert "sac Hopper-v5 fp32 update" in line and "+32%" in line and "AMD EPYC 9B14" in line
    assert regressions(rows([13.2, 13.1, 13.5]), ref, tolerance=0.5) == []
    assert regressions(rows([13.2]), ref, ignore={("sac", "update")}) == []


def test_compares_only_ours_at_the_same_cpu_threads_and_settings() -> None:
    ref = as_read(rows([10.0]) + rows([10.0], lib="sb3"))
    assert regressions(rows([20.0], cpu="Intel Xeon"), ref) == []
    assert regressions(rows([20.0], threads=2), ref) == []
    assert regressions(rows([20.0], settings="steps=5000"), ref) == []
    assert regressions(rows([20.0], phase="total"), ref) == []  # nothing committed for it
    # a slower peer is not a regression of ours; the same rows as ours would be
    assert regressions(rows([20.0], lib="sb3"), ref) == []
    assert regressions(rows([20.0], lib="sb3"), ref, lib="sb3") != []
    assert uncovered(rows([20.0], cpu="Intel Xeon"), ref) == [
        "sac Hopper-v5 fp32 (steps=3000) on Intel Xeon, 1 thread(s)"]
    assert uncovered(rows([20.0], algo="pets"), ref) == [
        "pets Hopper-v5 fp32 (steps=3000) on AMD EPYC 9B14, 1 thread(s)"]
    assert uncovered(rows([20.0]), ref) == []


def test_merge_replaces_only_the_runs_measured_again() -> None:
    old = as_read(rows([10.0, 11.0]) + rows([5.0], algo="pets") + rows([9.0], threads=2))
    new = rows([12.0, 13.0, 14.0])
    merged = merge(old, new)
    assert len(merged) == 5 and [r["value"] for r in merged[-3:]] == [12.0, 13.0, 14.0]
    assert {(r["algo"], str(r["threads"])) for r in merged[:2]} == {("pets", "1"), ("sac", "2")}


def test_rows_round_trip_and_reference_folder(tmp_path: Path) -> None:
    write_rows(tmp_path / "speed-amd-epyc.csv", rows([10.0, 11.0]))
    write_rows(tmp_path / "speed-intel-xeon.csv", rows([5.0], cpu="Intel Xeon"))
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    ref = read_reference(tmp_path)
    assert len(ref) == 3 and {r["cpu"] for r in ref} == {"AMD EPYC 9B14", "Intel Xeon"}
    assert regressions(rows([20.0]), ref) and not regressions(rows([6.0], cpu="Intel Xeon"), ref)
    assert read_reference(tmp_path / "none") == []
    with pytest.raises(ValueError, match="not a speed file"):
        read_rows(tmp_path / "other.csv")


def test_the_code_column_round_trips_and_older_files_read_without_it(tmp_path: Path) -> None:
    write_rows(tmp_path / "new.csv", [{**r, CODE: "d243d25c0af3"} for r in rows([1.0])])
    assert read_rows(tmp_path / "new.csv")[0][CODE] == "d243d25c0af3"
    old = tmp_path / "old.csv"
    old.write_text("cpu,threads,torch,algo,task,settings,lib,precision,phase,unit,rep,value\n"
                   "AMD EPYC,1,2.13.0+cpu,sac,Hopper-v5,s,mbrl-bench,fp32,update,ms,0,5\n")
    (row,) = read_rows(old)
    assert row[CODE] == "" and row["value"] == "5"
    write_rows(old, [row])  # rewritten with the column, empty
    assert read_rows(old)[0][CODE] == ""


def test_committed_speed_files_are_readable() -> None:
    folder = Path(__file__).resolve().parents[1] / "results" / "reference" / "speed"
    committed = read_reference(folder)
    assert committed, f"no speed-*.csv under {folder}"
    for row in committed:
        assert float(str(row["value"])) >= 0 and row["lib"] and row["phase"]
    assert {"sac", "mbpo", "pets"} <= {str(r["algo"]) for r in committed}
    assert all(row[CODE] for row in committed), "every committed figure names its code"


def test_profile_by_kind_sums_self_times_per_repetition() -> None:
    from types import SimpleNamespace

    events = [SimpleNamespace(key="aten::mm", self_cpu_time_total=6000.0, count=4),
              SimpleNamespace(key="aten::bmm", self_cpu_time_total=2000.0, count=2),
              SimpleNamespace(key="aten::silu", self_cpu_time_total=1000.0, count=2),
              SimpleNamespace(key="aten::add", self_cpu_time_total=1000.0, count=2)]
    total, lines = profile_by_kind(events, 2, {"products": ("aten::mm", "aten::bmm"),
                                               "activations": ("aten::silu",)}, "ms", "update")
    assert total == pytest.approx(5.0)  # 10,000 µs over 2 repetitions
    assert lines == ["  products: 4.00 ms (80%)", "  activations: 0.50 ms (10%)",
                     "  everything else: 0.50 ms (10%); 5 profiled operator calls per update "
                     "in all"]
    total_s, lines_s = profile_by_kind(events, 1, {}, "s", "planned step")
    assert total_s == pytest.approx(0.01)
    assert lines_s == ["  everything else: 0.010 s (100%); 10 profiled operator calls per "
                       "planned step in all"]
