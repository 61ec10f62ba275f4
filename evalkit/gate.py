"""A CI regression gate: is a candidate run significantly worse than a baseline run?

The rule, per gated task and per metric that both runs report (all in percentage points, pp):

    delta = 100 * (candidate - baseline)
    FAIL  when  delta < -max_drop  AND  p < 1 - confidence
    pass  otherwise

So a drop of at most `max_drop` pp never fails, however consistent; a larger drop fails only when a
one-sided paired test says the candidate is worse than the baseline (H0: no difference). The test
pairs the two runs problem by problem:

- one sample per problem: the exact McNemar test, i.e. a binomial test on the discordant problems.
  With `broken` problems passed by the baseline only and `fixed` by the candidate only,
  p = P(X >= broken) for X ~ Binomial(broken + fixed, 1/2).
- several samples per problem (pass@k, maj@k, averaged pass@1): a paired bootstrap over problems.
  Each problem contributes d_i = candidate_i - baseline_i (its per-problem metric value); problems are
  resampled with replacement (seeded) and p is the share of resampled mean differences >= 0.

Runs that did not measure the same thing cannot be gated: different dataset files or revision, a
different prompt (task settings or the prompt text of any sample), different sampling or generation
limits, different problems, or a different task set. `check_comparable` lists every such difference
and the CLI exits 2 with them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from evalkit.compare import paired_samples
from evalkit.data import DataConfig
from evalkit.errors import EvalkitError
from evalkit.experiment import GATE_TOLERATED, task_settings
from evalkit.metrics import group_by_problem
from evalkit.requests import SamplingParams
from evalkit.store import Run
from evalkit.tasks import get_task

BOOTSTRAP_ITERS = 10_000
BOOTSTRAP_SEED = 0


class IncomparableRuns(EvalkitError, ValueError):
    """The two runs did not measure the same thing; `problems` says how they differ."""

    def __init__(self, problems: list[str]):
        super().__init__("the runs are not comparable:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class GateCheck:
    """The verdict on one metric of one task."""

    task: str
    metric: str
    baseline: float
    candidate: float
    test: str
    evidence: str  # the discordant counts, or the number of problems resampled
    p_value: float
    failed: bool
    reason: str

    @property
    def delta_pp(self) -> float:
        return 100 * (self.candidate - self.baseline)


@dataclass
class GateResult:
    baseline: Run
    candidate: Run
    max_drop: float
    confidence: float
    checks: list[GateCheck]
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(c.failed for c in self.checks)


# ------------------------------------------------------------------------------------------ tests


def mcnemar_exact_p(broken: int, fixed: int) -> float:
    """One-sided exact McNemar p-value that the candidate is worse: P(X >= broken), X ~ Bin(broken+fixed, 1/2)."""
    n = broken + fixed
    if n == 0:
        return 1.0
    return min(1.0, sum(math.comb(n, i) for i in range(broken, n + 1)) / 2**n)


def paired_bootstrap_p(diffs: Sequence[float], iters: int = BOOTSTRAP_ITERS, seed: int = BOOTSTRAP_SEED) -> float:
    """Share of bootstrap resamples (over problems) whose mean candidate-minus-baseline difference is >= 0.

    Small values mean the candidate is worse in nearly every resample: the one-sided bootstrap p-value.
    """
    d = np.asarray(diffs, dtype=float)
    if d.size == 0 or not d.any():
        return 1.0
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(iters, d.size))].mean(axis=1)
    # a tolerance, so a resample that reproduces a zero difference is not lost to float rounding
    return float((means >= -1e-12).mean())


# ------------------------------------------------------------------------------------------ comparability


def check_comparable(baseline: Run, candidate: Run, tasks: Sequence[str]) -> tuple[list[str], list[str]]:
    """(problems that make the runs incomparable, notes about tolerated differences) for `tasks`."""
    problems: list[str] = []
    notes: list[str] = []
    for name, run in (("baseline", baseline), ("candidate", candidate)):
        if bad := run.corrupt_lines:
            problems.append(f"the {name} run's samples.jsonl has {len(bad)} corrupt lines (e.g. line {bad[0]}), "
                            f"skipped as not samples; redo them with: evalkit run --resume {run.path}")
    for task in tasks:
        missing = [name for name, run in (("baseline", baseline), ("candidate", candidate))
                   if task not in run.results["tasks"]]
        if missing:
            problems.append(f"{task}: not evaluated in the {' and '.join(missing)} run")
            continue
        a, b = task_settings(baseline.config, task), task_settings(candidate.config, task)
        for key in sorted(a.keys() | b.keys()):
            if _same(a.get(key), b.get(key)):
                continue
            line = f"{task}: {key} differs (baseline {_brief(a.get(key))}, candidate {_brief(b.get(key))})"
            if key.startswith(GATE_TOLERATED):
                notes.append(line)
            else:
                problems.append(line)
        pairs, unpaired = paired_samples(baseline, candidate, task)
        if unpaired:
            problems.append(f"{task}: {unpaired} samples are in only one run (different problems, --limit or "
                            "samples per problem); evaluate the candidate on the baseline's problems")
        changed = sorted({str(sa["task_id"]) for sa, sb in pairs if sa.get("prompt") != sb.get("prompt")})
        if changed:
            problems.append(f"{task}: the prompt text differs on {len(changed)} problems "
                            f"(e.g. {', '.join(changed[:3])})")
        for name, run in (("baseline", baseline), ("candidate", candidate)):
            info = run.results["tasks"][task]
            expected = info.get("samples", info.get("n", 0) * info.get("samples_per_problem", 1))
            got = len(run.samples(task))
            if got != expected:
                problems.append(f"{task}: the {name} run has {got} scored samples, its results.json says {expected}")
            errors = info.get("verdicts", {}).get("error", 0)
            if errors:
                notes.append(f"{task}: the {name} run has {errors} samples the harness could not judge "
                             "(verdict=error); they count as failures")
    return problems, notes


def _same(x: object, y: object) -> bool:
    return json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)


def _brief(value: object, width: int = 48) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


# ------------------------------------------------------------------------------------------ per-problem values


def per_problem_values(run: Run, task: str, samples_per_problem: int) -> dict[str, dict[str, float]]:
    """metric -> problem -> that problem's value, from the task's own aggregation applied to each problem.

    Every metric evalkit reports is a mean over problems, so the task's `aggregate` on one problem's
    samples gives that problem's share; the gate checks the means against results.json. The task is rebuilt
    with the options the run recorded, so an aggregation that depends on them is the run's own.
    """
    records = run.samples(task)
    options = dict(run.config.get("tasks", {}).get(task, {}).get("options") or {})
    prompt, chat = options.pop("prompt_variant", None), bool(options.pop("chat", False))
    scorer = get_task(task, DataConfig(), prompt=prompt, chat=chat, **options)
    sampling = SamplingParams(n=samples_per_problem)
    out: dict[str, dict[str, float]] = {}
    for task_id, rows in group_by_problem(records).items():
        for metric, value in scorer.aggregate(rows, sampling)["metrics"].items():
            out.setdefault(metric, {})[str(task_id)] = float(value)
    return out


# ------------------------------------------------------------------------------------------ the gate


def gate_runs(baseline: Run, candidate: Run, max_drop: float = 1.0, confidence: float = 0.95,
              tasks: Sequence[str] | None = None) -> GateResult:
    """Gate `candidate` against `baseline`; raises IncomparableRuns when they did not measure the same thing."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if max_drop < 0:
        raise ValueError(f"max-drop must be >= 0 percentage points, got {max_drop}")
    if tasks is None:
        tasks = baseline.task_names
        if set(tasks) != set(candidate.task_names):
            raise IncomparableRuns([
                f"different task sets: baseline {', '.join(baseline.task_names)}; candidate "
                f"{', '.join(candidate.task_names)} (pass --tasks to gate the tasks both evaluated)"])
    problems, notes = check_comparable(baseline, candidate, tasks)
    if problems:
        raise IncomparableRuns(problems)
    alpha = 1 - confidence
    checks = []
    for task in tasks:
        checks += _gate_task(baseline, candidate, task, max_drop, alpha, notes)
    return GateResult(baseline, candidate, max_drop, confidence, checks, notes)


def _gate_task(baseline: Run, candidate: Run, task: str, max_drop: float, alpha: float,
               notes: list[str]) -> list[GateCheck]:
    n = baseline.results["tasks"][task].get("samples_per_problem", 1)
    base_values = per_problem_values(baseline, task, n)
    cand_values = per_problem_values(candidate, task, n)
    checks = []
    for metric in baseline.results["tasks"][task]["metrics"]:
        if metric not in candidate.results["tasks"][task]["metrics"]:
            notes.append(f"{task}: {metric} is not reported by the candidate run; not gated")
            continue
        base, cand = base_values.get(metric), cand_values.get(metric)
        if base is None or cand is None:
            raise IncomparableRuns([f"{task}: {metric} cannot be split into per-problem values, so it cannot be "
                                    "paired"])
        for name, run, values in (("baseline", baseline, base), ("candidate", candidate, cand)):
            recorded = run.results["tasks"][task]["metrics"][metric]
            if not math.isclose(float(np.mean(list(values.values()))), recorded, abs_tol=1e-9):
                raise IncomparableRuns([f"{task}: {metric} of the {name} run ({recorded}) is not the mean of its "
                                        "per-problem values; its samples.jsonl does not match its results.json"])
        ids = sorted(base)
        a = np.array([base[i] for i in ids])
        b = np.array([cand[i] for i in ids])
        if n == 1:
            broken, fixed = int((a > b).sum()), int((b > a).sum())
            p = mcnemar_exact_p(broken, fixed)
            test, evidence = "McNemar exact", f"{broken} worse / {fixed} better"
        else:
            p = paired_bootstrap_p(b - a)
            worse, better = int((a > b).sum()), int((b > a).sum())
            test, evidence = "paired bootstrap", f"{worse} worse / {better} better of {len(ids)}"
        delta_pp = 100 * (float(b.mean()) - float(a.mean()))
        failed, reason = _verdict(delta_pp, max_drop, p, alpha)
        checks.append(GateCheck(task, metric, float(a.mean()), float(b.mean()), test, evidence, p, failed, reason))
    return checks


def _verdict(delta_pp: float, max_drop: float, p: float, alpha: float) -> tuple[bool, str]:
    # Rounding guard: a drop of exactly max_drop (e.g. 1 problem of 100, max-drop 1.0) is tolerated.
    if delta_pp >= -max_drop - 1e-9:
        return False, "no drop" if delta_pp >= 0 else f"drop {-delta_pp:.2f} pp is within the {max_drop:g} pp tolerated"
    if p < alpha:
        return True, f"drop {-delta_pp:.2f} pp > {max_drop:g} pp and significant (p {p:.2g} < {alpha:.2g})"
    return False, f"drop {-delta_pp:.2f} pp > {max_drop:g} pp but not significant (p {p:.2g} >= {alpha:.2g})"


def format_gate(result: GateResult) -> str:
    lines = [
        f"baseline:  {result.baseline.run_id} ({result.baseline.label})",
        f"candidate: {result.candidate.run_id} ({result.candidate.label})",
        f"rule: FAIL when the drop exceeds {result.max_drop:g} pp and a one-sided paired test gives "
        f"p < {1 - result.confidence:.2g} (confidence {result.confidence:g})",
        "",
    ]
    rows = [("task", "metric", "baseline %", "candidate %", "delta pp", "test", "pairs", "p", "verdict")]
    for c in result.checks:
        rows.append((c.task, c.metric, f"{100 * c.baseline:.2f}", f"{100 * c.candidate:.2f}", f"{c.delta_pp:+.2f}",
                     c.test, c.evidence, f"{c.p_value:.3g}", ("FAIL: " if c.failed else "pass: ") + c.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    table.insert(1, "  ".join("-" * w for w in widths))
    lines += table
    if result.notes:
        lines += ["", *[f"note: {n}" for n in result.notes]]
    failed = [c for c in result.checks if c.failed]
    checks = f"{len(result.checks)} check{'s' if len(result.checks) != 1 else ''}"
    lines += ["", f"gate: FAIL ({len(failed)} of {checks} regressed)" if failed
              else f"gate: pass ({checks}, none significantly worse)"]
    return "\n".join(lines)
