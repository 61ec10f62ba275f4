"""Sandbox executions per second per language, compile included, over reference solutions.

Python: MBPP's reference solutions; C++, Java, JavaScript, Go, Rust: HumanEval-X's canonical solutions;
Bash: MultiPL-E's programs with a no-op body (MultiPL-E ships no solutions; its tests run and fail).
Each program is scored through its task, exactly as a run scores it, on a pool of `--workers`
containers; the rate is programs over wall-clock seconds, after one warm-up program per worker.

    python benchmarks/bench_languages.py [--problems N] [--workers W] [--languages python,cpp,...]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

from evalkit.data import DataConfig
from evalkit.sandbox import open_sandbox
from evalkit.tasks import Scored, Task, get_task

# language -> (task, completion for every doc; None: the doc's reference solution)
SOURCES = {
    "python": ("mbpp", None),
    "cpp": ("humaneval-x-cpp", None),
    "java": ("humaneval-x-java", None),
    "javascript": ("humaneval-x-js", None),
    "go": ("humaneval-x-go", None),
    "rust": ("humaneval-x-rust", None),
    "bash": ("multipl-e-sh", "    :"),
}


def programs(task: Task, limit: int, fixed: str | None) -> list[tuple[dict, str]]:
    docs = task.docs()
    step = max(1, len(docs) // limit)  # spread over the benchmark rather than its first problems
    chosen = docs[::step][:limit]
    return [(d, task.request(d).reference if fixed is None else fixed) for d in chosen]


def score(job: tuple[Task, dict, str], sandbox) -> Scored:
    task, doc, completion = job
    return task.score(doc, completion, sandbox)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=24, help="programs per language")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--languages", default=",".join(SOURCES))
    args = parser.parse_args()
    data = DataConfig.from_options()
    print(f"{'language':11s} {'programs':>8s} {'passed':>6s} {'seconds':>8s} {'exec/s':>7s} {'s/exec/worker':>14s}")
    with open_sandbox(workers=args.workers) as sandbox:
        for lang in args.languages.split(","):
            name, fixed = SOURCES[lang]
            task = get_task(name, data)
            jobs = [(task, doc, completion) for doc, completion in programs(task, args.problems, fixed)]
            with ThreadPoolExecutor(args.workers) as pool:  # warm-up: start every worker container
                list(pool.map(score, jobs[: args.workers], [sandbox] * args.workers))
                start = time.perf_counter()
                scored = list(pool.map(score, jobs, [sandbox] * len(jobs)))
                elapsed = time.perf_counter() - start
            passed = sum(s.passed for s in scored)
            rate = len(jobs) / elapsed
            print(f"{lang:11s} {len(jobs):8d} {passed:6d} {elapsed:8.1f} {rate:7.2f} {args.workers / rate:14.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
