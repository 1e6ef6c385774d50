"""Reporting: aggregate statistics, the sample-efficiency table and plots of the run store.

The plotting functions import matplotlib and seaborn, so they are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mbrl_bench.reporting.aggregate import (
    iqm,
    mean_ci,
    performance_profile,
    probability_of_improvement,
    steps_to_threshold,
    stratified_bootstrap_ci,
    trimmed_mean,
)
from mbrl_bench.reporting.table import (
    RunStoreWarning,
    format_markdown,
    load_metrics,
    load_runs,
    return_at_budget,
    sample_efficiency_table,
    write_table,
)

if TYPE_CHECKING:
    from mbrl_bench.reporting.plots import plot_curves, plot_metrics

__all__ = [
    "RunStoreWarning",
    "format_markdown",
    "iqm",
    "load_metrics",
    "load_runs",
    "mean_ci",
    "performance_profile",
    "plot_curves",
    "plot_metrics",
    "probability_of_improvement",
    "return_at_budget",
    "sample_efficiency_table",
    "steps_to_threshold",
    "stratified_bootstrap_ci",
    "trimmed_mean",
    "write_table",
]

_LAZY = {"plot_curves", "plot_metrics"}


def __getattr__(name: str) -> Any:
    """Import the plotting functions on first access (keeps matplotlib out of table-only use)."""
    if name in _LAZY:
        from mbrl_bench.reporting import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
