"""Comparing run folders: which settings differ, how each task's metrics moved, and which samples flipped.

`evalkit compare`, `evalkit report` and `evalkit gate` all read runs through `store.load_run` and judge
whether two runs measured the same thing through `evalkit.experiment`.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field

from evalkit.errors import RunStoreError
from evalkit.experiment import differing_settings, moves_scores
from evalkit.store import Run, load_run, natural_key

__all__ = ["Comparison", "Flip", "MetricDelta", "TaskComparison", "compare_runs", "format_comparison", "load_run",
           "paired_samples"]


# ------------------------------------------------------------------------------------------ comparison


@dataclass(frozen=True)
class MetricDelta:
    task: str
    metric: str
    a: float | None
    b: float | None
    a_stderr: float | None = None
    b_stderr: float | None = None

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


@dataclass(frozen=True)
class Flip:
    """A sample judged differently by the two runs: passed in one, not passed in the other."""

    task: str
    task_id: str
    sample_index: int
    a_verdict: str
    b_verdict: str

    @property
    def fixed(self) -> bool:
        return self.b_verdict == "passed"


@dataclass
class TaskComparison:
    task: str
    deltas: list[MetricDelta]
    paired: int  # samples present in both runs
    unpaired: int  # samples present in only one run
    flips: list[Flip]
    samples_per_problem: int = 1

    @property
    def fixed(self) -> list[Flip]:
        return [f for f in self.flips if f.fixed]

    @property
    def broken(self) -> list[Flip]:
        return [f for f in self.flips if not f.fixed]


@dataclass
class Comparison:
    a: Run
    b: Run
    tasks: list[TaskComparison]
    only_in_a: list[str]
    only_in_b: list[str]
    settings: dict[str, list[object]]  # differing settings: key -> [value in a, value in b]
    corrupt: dict[str, list[int]] = field(default_factory=dict)  # "A"/"B" -> samples.jsonl lines skipped


def paired_samples(a: Run, b: Run, task: str) -> tuple[list[tuple[dict, dict]], int]:
    """Samples of `task` matched by (problem, sample index), and how many were in only one run."""
    left = {(s["task_id"], s["sample_index"]): s for s in a.samples(task)}
    right = {(s["task_id"], s["sample_index"]): s for s in b.samples(task)}
    both = sorted(left.keys() & right.keys(), key=lambda k: (natural_key(k[0]), k[1]))
    return [(left[k], right[k]) for k in both], len(left.keys() ^ right.keys())


def compare_task(a: Run, b: Run, task: str) -> TaskComparison:
    ra, rb = a.results["tasks"][task], b.results["tasks"][task]
    metrics = list(dict.fromkeys([*ra.get("metrics", {}), *rb.get("metrics", {})]))
    deltas = [MetricDelta(task, m, ra["metrics"].get(m), rb["metrics"].get(m),
                          ra.get("stderr", {}).get(m), rb.get("stderr", {}).get(m)) for m in metrics]
    pairs, unpaired = paired_samples(a, b, task)
    flips = [Flip(task, sa["task_id"], sa["sample_index"], sa["verdict"], sb["verdict"])
             for sa, sb in pairs if bool(sa["passed"]) != bool(sb["passed"])]
    per_problem = max(ra.get("samples_per_problem", 1), rb.get("samples_per_problem", 1))
    return TaskComparison(task, deltas, len(pairs), unpaired, flips, per_problem)


def compare_runs(a: Run, b: Run, tasks: Iterable[str] | None = None) -> Comparison:
    """Per-task metric deltas (b - a) and flipped samples, for the tasks both runs evaluated."""
    shared = [t for t in a.task_names if t in b.results["tasks"]]
    if tasks is not None:
        wanted = list(tasks)
        missing = [t for t in wanted if t not in shared]
        if missing:
            raise RunStoreError(f"task(s) {', '.join(missing)} are not in both runs (shared: {', '.join(shared)})")
        shared = wanted
    return Comparison(
        a=a,
        b=b,
        tasks=[compare_task(a, b, t) for t in shared],
        only_in_a=[t for t in a.task_names if t not in b.results["tasks"]],
        only_in_b=[t for t in b.task_names if t not in a.results["tasks"]],
        settings=differing_settings([a.config, b.config]),
        corrupt={side: run.corrupt_lines for side, run in (("A", a), ("B", b)) if run.corrupt_lines},
    )


# ------------------------------------------------------------------------------------------ text


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _sample_name(flip: Flip, many_samples: bool) -> str:
    return f"{flip.task_id}#{flip.sample_index}" if many_samples else str(flip.task_id)


def format_comparison(c: Comparison, max_listed: int | None = None) -> str:
    """The deltas table, then per task the flipped samples (B's verdict in brackets for broken ones)."""
    lines = [f"A: {c.a.run_id} ({c.a.label})", f"B: {c.b.run_id} ({c.b.label})", ""]
    rows = [("task", "metric", "A %", "B %", "B - A (pp)", "stderr A/B")]
    for tc in c.tasks:
        for d in tc.deltas:
            se = "/".join("-" if s is None else f"{100 * s:.2f}" for s in (d.a_stderr, d.b_stderr))
            delta = "-" if d.delta is None else f"{100 * d.delta:+.2f}"
            rows.append((tc.task, d.metric, _pct(d.a), _pct(d.b), delta, se))
    if len(rows) > 1:
        lines += _table(rows)
    for tc in c.tasks:
        many = tc.samples_per_problem > 1
        lines += ["", f"{tc.task}: {len(tc.flips)} of {tc.paired} paired samples flipped "
                      f"({len(tc.fixed)} fixed in B, {len(tc.broken)} broken in B)"]
        if tc.unpaired:
            lines.append(f"  note: {tc.unpaired} samples are in only one of the runs and were not paired")
        for title, flips, show_verdict in (("broken (passed in A, not in B)", tc.broken, True),
                                           ("fixed (passed in B, not in A)", tc.fixed, False)):
            if not flips:
                continue
            shown = flips if max_listed is None else flips[:max_listed]
            names = [_sample_name(f, many) + (f" [{f.b_verdict}]" if show_verdict else "") for f in shown]
            more = f" ... and {len(flips) - len(shown)} more" if len(shown) < len(flips) else ""
            lines.append(f"  {title}:")
            lines += textwrap.wrap(", ".join(names) + more, width=100, initial_indent="    ",
                                   subsequent_indent="    ", break_on_hyphens=False)
    for side, bad in c.corrupt.items():
        lines += ["", f"note: {side}'s samples.jsonl has {len(bad)} corrupt lines (e.g. line {bad[0]}): not samples, "
                      "so they were skipped and count for nothing; `evalkit run --resume` redoes their samples"]
    if c.only_in_a or c.only_in_b:
        lines.append("")
        if c.only_in_a:
            lines.append(f"tasks only in A: {', '.join(c.only_in_a)}")
        if c.only_in_b:
            lines.append(f"tasks only in B: {', '.join(c.only_in_b)}")
    if c.settings:
        lines += ["", "settings that differ (! = can move scores):"]
        for key, (va, vb) in c.settings.items():
            mark = "!" if moves_scores(key) else " "
            lines.append(f"  {mark} {key}: A={_short(va)}  B={_short(vb)}")
    return "\n".join(lines)


def _short(value: object, width: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 3] + "..."
