"""Wall time of one evaluation on 1 vs 2 Ray nodes, and what the merge costs, side by side.

The work: a tiny random native Mamba-2 checkpoint (written here, in the real format) generates HumanEval
completions on the CPU (--limit problems, --n-samples each, --max-tokens new tokens, temperature 0.8), and
the Docker sandbox executes them; cut into --shards shards. Three ways, the same work:

1. one process, no Ray (`run_evaluation`);
2. Ray, one node with --cpus CPUs;
3. Ray, two nodes with --cpus CPUs each (both on this machine, so they share its cores).

Cluster start-up is outside the timings; each Ray timing includes the merge, which is also timed alone.
Usage:
    python benchmarks/bench_ray.py [--limit 16] [--n-samples 2] [--shards 4] [--cpus 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the checkpoint writer the tests use
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one torch thread per shard process: the nodes' CPUs are the knob


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=16)
    parser.add_argument("--n-samples", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=1, help="CPUs per Ray node")
    args = parser.parse_args()

    from mamba2_checkpoints import oracle, save_native
    from ray.cluster_utils import Cluster

    from evalkit.data import DataConfig
    from evalkit.merge import merge_shards
    from evalkit.ray_runner import run_on_ray
    from evalkit.requests import SamplingParams
    from evalkit.runner import RunOptions, run_evaluation

    work = Path(tempfile.mkdtemp(prefix="evalkit-bench-ray-"))
    checkpoint = work / "ckpt"
    save_native(oracle(seed=0), checkpoint)

    def options(name: str) -> RunOptions:
        return RunOptions(model=str(checkpoint), tasks=["humaneval"], limit=args.limit, output_dir=work / name,
                          sampling=SamplingParams(n=args.n_samples, temperature=0.8), max_tokens=args.max_tokens,
                          data=DataConfig.from_options(), sandbox_workers=1, requests_per_call=4,
                          backend_options={"device": "cpu", "dtype": "float32"})

    rows = []
    start = time.perf_counter()
    _, reference = run_evaluation(options("one-process"), progress=False, log=lambda m: None)
    rows.append(("one process (no Ray)", time.perf_counter() - start, None))
    for nodes in (1, 2):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": args.cpus, "include_dashboard": False})
        try:
            for _ in range(nodes - 1):
                cluster.add_node(num_cpus=args.cpus)
            cluster.wait_for_nodes(timeout=120)
            start = time.perf_counter()
            path, results = run_on_ray(options(f"ray-{nodes}"), args.shards, cluster.address, log=lambda m: None)
            total = time.perf_counter() - start
        finally:
            cluster.shutdown()
        assert results["tasks"] == reference["tasks"], "the Ray run differs from the one-process run"
        shard_dirs = sorted((path / "shards").iterdir())
        start = time.perf_counter()
        merge_shards(work / f"merge-again-{nodes}", shard_dirs, log=lambda m: None)
        rows.append((f"Ray, {nodes} node{'s' if nodes > 1 else ''} x {args.cpus} CPU, {args.shards} shards", total,
                     time.perf_counter() - start))

    samples = args.limit * args.n_samples
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"work: {args.limit} HumanEval problems x {args.n_samples} samples = {samples} generations + sandbox "
          f"executions; tiny native Mamba-2 on CPU, {args.max_tokens} new tokens; results identical in every row")
    print(f"machine: {os.cpu_count()} CPUs; {load}")
    one_node = rows[1][1]
    print(f"\n{'setup':40s} {'wall s':>8s} {'vs 1 node':>10s} {'merge s':>8s} {'merge %':>8s}")
    for name, wall, merge in rows:
        ratio = f"{one_node / wall:.2f}x" if not name.startswith("one process") else "-"
        merge_s = "-" if merge is None else f"{merge:.3f}"
        merge_pct = "-" if merge is None else f"{100 * merge / wall:.1f}"
        print(f"{name:40s} {wall:8.1f} {ratio:>10s} {merge_s:>8s} {merge_pct:>8s}")


if __name__ == "__main__":
    main()
