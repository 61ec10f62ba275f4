"""Matplotlib figures for `evalkit report` and `evalkit bench`, returned as PNG bytes.

Figures are drawn on the non-interactive Agg canvas, so they work on machines without a display.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def task_bars(values: pd.DataFrame, stderr: pd.DataFrame, title: str = "Scores by task") -> bytes:
    """Grouped bars: one group per (task, metric) column, one bar per run (row), +-1 stderr error bars.

    `values` and `stderr` hold fractions; the axis shows percent.
    """
    columns = list(values.columns)
    runs = list(values.index)
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 + 1.1 * len(columns) * max(1, len(runs)) * 0.5), 4.2))
    x = np.arange(len(columns))
    for i, run in enumerate(runs):
        heights = 100 * values.loc[run].astype(float).to_numpy()
        errors = 100 * stderr.loc[run].astype(float).fillna(0).to_numpy()
        bars = ax.bar(x + (i - (len(runs) - 1) / 2) * width, np.nan_to_num(heights), width, yerr=errors,
                      capsize=3, label=str(run), error_kw={"elinewidth": 1})
        for bar, h in zip(bars, heights, strict=True):
            if np.isnan(h):  # the run did not evaluate this task
                bar.set_alpha(0)
    ax.set_xticks(x, [f"{t}\n{m}" for t, m in columns])
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    return _png(fig)


# Bench curves: (column with the median, columns with the spread, y label, title stem, log y).
BENCH_PANELS = {
    "prefill": ("prefill_tok_s", ("prefill_tok_s_min", "prefill_tok_s_max"), "prefill throughput (tokens/s)",
                "Prefill throughput vs context", True),
    "decode": ("decode_ms_per_tok", ("decode_ms_per_tok_min", "decode_ms_per_tok_max"),
               "decode latency (ms/token, with cache)", "Decode latency vs context", False),
    "memory": ("peak_mem_mib", (None, None), "peak memory (MiB)", "Peak memory vs context", False),
}


def _tokens(value: float, _pos: object = None) -> str:
    """Axis label for a token count: 512, 1K, 64K, 1M."""
    for power, unit in ((40, "T"), (30, "G"), (20, "M"), (10, "K")):
        if value >= 2**power:
            return f"{value / 2**power:.4g}{unit}"
    return f"{value:.4g}"


def bench_chart(rows: Sequence[dict], panel: str, subtitle: str) -> bytes:
    """One bench panel: a line per architecture over context length (log x), median with min-max bars.

    Sizes that did not fit are drawn as crosses on the axis floor, the curve stopped before them.
    """
    value_key, (lo_key, hi_key), ylabel, title, log_y = BENCH_PANELS[panel]
    frame = pd.DataFrame(list(rows))
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for arch, group in frame.groupby("arch", sort=False):
        group = group.sort_values("context")
        done = group[group["status"] == "ok"]
        if len(done):
            y = done[value_key].astype(float).to_numpy()
            yerr = None
            if lo_key and hi_key:
                yerr = np.vstack([y - done[lo_key].astype(float).to_numpy(), done[hi_key].astype(float).to_numpy() - y])
            line = ax.errorbar(done["context"], y, yerr=yerr, marker="o", markersize=4, capsize=3, label=str(arch))
            color = line[0].get_color()
        else:
            color = None
        stopped = group[group["status"] != "ok"]
        if len(stopped):
            # x in data units, y in axes units: a cross on the floor, whatever the y scale
            ax.plot(stopped["context"], [0.03] * len(stopped), "x", color=color, markersize=9, mew=2,
                    transform=ax.get_xaxis_transform(), label=f"{arch}: stopped (would not fit)")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(_tokens))
    measured = (frame["status"] == "ok").any()
    if log_y and measured:
        ax.set_yscale("log")
    if not measured:
        ax.text(0.5, 0.5, "nothing measured: no size fitted", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
