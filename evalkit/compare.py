"""Comparing run folders: which settings differ, how each task's metrics moved, and which samples flipped.

`evalkit compare`, `evalkit report` and `evalkit gate` all read runs through `load_run` and judge whether
two runs measured the same thing through `task_settings`.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.store import RunStore, RunStoreError

# Config sections that describe where a run happened rather than what it measured.
PROVENANCE_SECTIONS = ("packages", "git", "sandbox")
# Config entries that name the model; they differ between the runs one compares, by design. How a backend
# ran the model (dtype, device) is compared.
IDENTITY_SECTIONS = ("model",)
BACKEND_IDENTITY = ("name", "model", "path", "file", "sha256", "config_sha256", "arch", "tokenizer")


@dataclass
class Run:
    """A finished run folder: its results.json, and its samples.jsonl read on first use."""

    path: Path
    results: dict
    _samples: list[dict] | None = field(default=None, repr=False)

    @property
    def run_id(self) -> str:
        return self.results.get("run_id", self.path.name)

    @property
    def model(self) -> str:
        return self.results.get("model", "?")

    @property
    def config(self) -> dict:
        return self.results.get("config", {})

    @property
    def task_names(self) -> list[str]:
        return list(self.results.get("tasks", {}))

    @property
    def label(self) -> str:
        """A short name for tables: the model, with the file or folder name instead of a full path."""
        model = self.model
        if model.startswith("replay:"):
            return "replay:" + Path(model[len("replay:"):]).name
        return Path(model).name if "/" in model else model

    def samples(self, task: str) -> list[dict]:
        """The task's scored samples, ordered by problem and sample index."""
        if self._samples is None:
            self._samples = list(RunStore(self.path).samples().values())
        rows = [s for s in self._samples if s["task"] == task]
        return sorted(rows, key=lambda s: (natural_key(s["task_id"]), s["sample_index"]))


def natural_key(task_id: object) -> tuple:
    """Sort key that puts HumanEval/2 before HumanEval/10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(task_id)))


def load_run(path: str | Path) -> Run:
    """Read a finished run folder (or the results.json inside one)."""
    path = Path(path)
    if path.is_file() and path.name == "results.json":
        path = path.parent
    results_file = path / "results.json"
    if not path.is_dir():
        raise RunStoreError(f"{path} is not a run folder (no such directory)")
    if not results_file.exists():
        state = "unfinished run (run.json but no results.json; finish it with --resume)" if (
            path / "run.json").exists() else "not an evalkit run folder"
        raise RunStoreError(f"{path}: {state}")
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunStoreError(f"{results_file} is not valid JSON ({e.msg})") from None
    if not isinstance(results, dict) or not isinstance(results.get("tasks"), dict):
        raise RunStoreError(f"{results_file} has no per-task results")
    return Run(path, results)


# ------------------------------------------------------------------------------------------ settings


def flatten(value: object, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    if isinstance(value, dict) and value:
        out: dict[str, object] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def normalize_dataset(dataset: dict) -> dict:
    """Dataset provenance without local paths: the same file read from two folders is the same data."""
    out = dict(dataset)
    if isinstance(out.get("files"), dict):
        out["files"] = sorted(out["files"].values())  # the sha256 digests
    return out


def task_settings(config: dict, task: str) -> dict[str, object]:
    """Everything recorded about `task` that moves its score, flattened: dataset revision, prompt and
    checker settings, generation limits, sampling, problem limit and the sandbox toolchain."""
    info = config.get("tasks", {}).get(task, {})
    sampling = {k: v for k, v in config.get("sampling", {}).items()}
    if info.get("kind") == "loglikelihood":
        sampling = {}  # log-likelihood tasks draw no samples
    out = {"limit": config.get("limit")}
    out.update(flatten({"sampling": sampling}))
    for key, value in info.items():
        if key == "dataset":
            value = normalize_dataset(value)
        out.update(flatten({key: value}))
    return out


def comparable_config(config: dict) -> dict[str, object]:
    """The whole config flattened, with local paths normalized away and the model's identity left out."""
    out = {}
    for section, value in config.items():
        if section in IDENTITY_SECTIONS:
            continue
        if section == "backend" and isinstance(value, dict):
            how = {k: v for k, v in value.items() if k not in BACKEND_IDENTITY}
            out.update(flatten({section: how}) if how else {})
            continue
        if section == "tasks":
            for task in value:
                out.update({f"tasks.{task}.{k}": v for k, v in task_settings(config, task).items()
                            if not k.startswith(("sampling.", "limit"))})
        else:
            out.update(flatten({section: value}))
    return out


def differing_settings(configs: Sequence[dict]) -> dict[str, list[object]]:
    """Settings (flattened keys) whose value is not the same in every config; absent keys read as None."""
    flat = [comparable_config(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    return {k: [f.get(k) for f in flat] for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1}


def moves_scores(key: str) -> bool:
    """Whether a differing setting can change scores (as opposed to where or with what the run happened)."""
    return not key.startswith(PROVENANCE_SECTIONS)


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
