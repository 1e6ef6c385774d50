"""Helpers shared by the Ray cluster test and ``benchmarks/fault_injection.py``: which node of a
``ray.cluster_utils.Cluster`` runs a process, and the local executor's rows of a smoke run."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def parent(pid: int) -> int:
    """The parent of process ``pid`` (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def node_of(pid: int, nodes: list[Any]) -> Any:
    """The node among ``nodes`` whose raylet started the worker process ``pid`` (None: none;
    Ray starts each task's worker process from its node's raylet)."""
    raylets = {n.all_processes["raylet"][0].process.pid: n for n in nodes}
    while pid > 1:
        if pid in raylets:
            return raylets[pid]
        pid = parent(pid)
    return None


def reference_dir(reference: Path, rel: Path) -> Path:
    """Where the reference rows of the run ``rel`` (``<env>/<algo>/seed_0`` under the suite)
    are: a run folder of an uninterrupted run, or a golden folder (``<env>/<algo>``)."""
    return reference / rel if (reference / rel).is_dir() else reference / rel.parent
