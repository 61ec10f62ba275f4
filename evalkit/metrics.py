"""Score arithmetic: unbiased pass@k, means with standard errors, and a seeded bootstrap."""

from __future__ import annotations

import math
import random
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


def bootstrap_stderr(
    items: Sequence, statistic: Callable[[Sequence], float], iters: int = 1000, seed: int = 0
) -> float:
    """Standard deviation of `statistic` over resamples (with replacement) of `items`, seeded."""
    if len(items) < 2:
        return 0.0
    rng = random.Random(seed)
    n = len(items)
    stats = [statistic([items[rng.randrange(n)] for _ in range(n)]) for _ in range(iters)]
    return float(np.std(stats, ddof=1))


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
