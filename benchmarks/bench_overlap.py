"""Generation and execution overlap: a run costs about max(generation, execution), not their sum.

The backend generates with a real model (a small random Mamba-2 decoding `--tokens` tokens greedily per
problem, one torch thread) and answers with the canonical solution, so execution is real too: HumanEval's
tests in the Docker sandbox (one worker). Generation and execution thus use one core each, as they would
with the model on a GPU and the programs on CPU cores. The same run is timed with the runner's overlap on
and off (off: each batch is executed before the next is generated), interleaved, next to the time of
generation alone and execution alone. Usage:
    python benchmarks/bench_overlap.py [--limit 164] [--tokens 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from evalkit.backends import Backend
from evalkit.data import DataConfig
from evalkit.models.generate import generate
from evalkit.models.mamba2 import Mamba2Config, Mamba2LM
from evalkit.requests import Completion, GenerationRequest, SamplingParams
from evalkit.runner import RunOptions, run_evaluation
from evalkit.sandbox import open_sandbox
from evalkit.tasks import get_task


class ModelPacedReference(Backend):
    """Spends a real model's decode time on each request, then answers with the reference solution."""

    name = "model-paced-reference"

    def __init__(self, tokens: int):
        torch.manual_seed(0)
        self.model = Mamba2LM(Mamba2Config(d_model=256, n_layers=4, vocab_size=32768)).eval()
        self.tokens = tokens

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingParams) -> list[list[Completion]]:
        out = []
        for req in requests:
            generate(self.model, torch.tensor([1, 2, 3, 4]), self.tokens)
            out.append([Completion(req.reference or "", finish_reason="stop") for _ in req.sample_indices])
        return out


def timed_run(backend: Backend, limit: int, overlap: bool, out: Path) -> float:
    opts = RunOptions(model="bench", tasks=["humaneval"], limit=limit, output_dir=out, data=DataConfig.from_options(),
                      sandbox_workers=1, requests_per_call=4, overlap=overlap)
    start = time.perf_counter()
    _, results = run_evaluation(opts, backend=backend, progress=False, log=lambda _m: None)
    elapsed = time.perf_counter() - start
    assert results["tasks"]["humaneval"]["metrics"]["pass@1"] == 1.0
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=164)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    backend = ModelPacedReference(args.tokens)
    backend.close = lambda: None  # the runner closes backends; this one is reused across runs
    task = get_task("humaneval", DataConfig.from_options())
    docs = task.docs()[: args.limit]
    requests = [task.request(d) for d in docs]

    start = time.perf_counter()
    backend.generate(requests, SamplingParams())
    generation = time.perf_counter() - start
    with open_sandbox(workers=1) as sandbox:
        task.score(docs[0], docs[0]["canonical_solution"], sandbox)  # start the worker outside the timing
        start = time.perf_counter()
        for d in docs:
            task.score(d, d["canonical_solution"], sandbox)
        execution = time.perf_counter() - start

    times: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for overlap in (False, True):
                times[overlap].append(timed_run(backend, args.limit, overlap, Path(tmp) / f"{overlap}-{r}"))
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"HumanEval, {args.limit} problems; generation: Mamba-2 d256 L4, {args.tokens} tokens/problem, 1 thread; "
          f"execution: 1 sandbox worker; median of {args.repeats}")
    print(f"  generation alone      {generation:7.2f} s")
    print(f"  execution alone       {execution:7.2f} s")
    print(f"  sum / max             {generation + execution:7.2f} s / {max(generation, execution):.2f} s")
    print(f"  run, overlap off      {off:7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times[False])})")
    print(f"  run, overlap on       {on:7.2f} s  (runs: {', '.join(f'{t:.2f}' for t in times[True])})")
    print(f"  overlap on vs off     {off / on:7.2f}x faster")


if __name__ == "__main__":
    main()
