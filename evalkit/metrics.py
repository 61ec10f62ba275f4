"""Score arithmetic: unbiased pass@k, accuracy and majority vote, means with closed-form standard errors."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of the Codex paper: 1 - C(n-c, k) / C(n, k), as a stable product."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its closed-form standard error (sample std / sqrt(n)); stderr 0 for fewer than 2 values."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def group_by_problem(records: Sequence[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["task_id"]].append(r)
    return groups


def pass_at_k_metrics(records: Sequence[dict], n: int, ks: Sequence[int] = (1, 10, 100)) -> dict:
    """pass@k for every k <= n, each with the closed-form standard error over problems."""
    groups = group_by_problem(records)
    out: dict = {"metrics": {}, "stderr": {}, "stderr_method": {}}
    for k in ks:
        if k > n:
            continue
        per_problem = [pass_at_k(len(rs), sum(r["verdict"] == "passed" for r in rs), k) for rs in groups.values()]
        mean, se = mean_stderr(per_problem)
        out["metrics"][f"pass@{k}"] = mean
        out["stderr"][f"pass@{k}"] = se
        out["stderr_method"][f"pass@{k}"] = "closed form: std of per-problem pass@k / sqrt(problems)"
    return out


def majority_vote(answers: Sequence[str | None], same: Callable[[str, str], bool]) -> int | None:
    """Index of the sample that represents the largest class of equivalent answers (None: no answers).

    Answers are grouped by `same` against each class's first member, so `1/2` and `0.5` vote together.
    Ties go to the class whose first member came first, which keeps the vote deterministic.
    """
    classes: list[list[int]] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        for members in classes:
            if same(answers[members[0]], answer):
                members.append(i)
                break
        else:
            classes.append([i])
    if not classes:
        return None
    return max(classes, key=len)[0]  # max() keeps the first of equally large classes


def accuracy_metrics(
    records: Sequence[dict],
    n: int,
    label: str,
    passed: Callable[[dict], bool],
    answer: Callable[[dict], str | None],
    same: Callable[[str, str], bool],
) -> dict:
    """`label`: mean correctness over samples per problem, averaged over problems; with n > 1 also
    `label_maj@n` (or `maj@n` when label is "accuracy"): the majority-voted answer's correctness."""
    groups = group_by_problem(records)
    out: dict = {"metrics": {}, "stderr": {}, "stderr_method": {}}
    per_problem = [sum(passed(r) for r in rs) / len(rs) for rs in groups.values()]
    out["metrics"][label], out["stderr"][label] = mean_stderr(per_problem)
    out["stderr_method"][label] = "closed form: std of per-problem mean correctness / sqrt(problems)"
    if n > 1:
        name = f"maj@{n}" if label == "accuracy" else f"{label}_maj@{n}"
        voted = []
        for rs in groups.values():
            rs = sorted(rs, key=lambda r: r.get("sample_index", 0))
            winner = majority_vote([answer(r) for r in rs], same)
            voted.append(0.0 if winner is None else float(passed(rs[winner])))
        out["metrics"][name], out["stderr"][name] = mean_stderr(voted)
        out["stderr_method"][name] = "closed form: std of per-problem majority-vote correctness / sqrt(problems)"
    return out
