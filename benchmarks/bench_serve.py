"""What the HTTP path costs: evaluation throughput through `evalkit serve` next to the same model in-process.

The same native model answers the same HumanEval prompts (greedy, a fixed number of new tokens) three ways:
in-process (`NativeBackend.generate`, all prompts in one call; also decoding one sequence at a time, which is
what a single client gets), and through `evalkit serve` on loopback with the
`openai:` backend at concurrency 1, 4 and 16 (one HTTP request per sample, as an evaluation sends them; the
server batches the requests that wait together). MMLU log-likelihoods are timed the same way: in-process
scoring reuses the context's state for the four answers, the server computes every prompt token's
log-probability (echo), as vLLM does. Outputs are compared too.

Default model: a tiny random Mamba-2 (hidden 128, 2 layers, the real 32768-token vocabulary; needs
transformers to write it). Usage:
    python benchmarks/bench_serve.py [--model SPEC] [--prompts 32] [--max-tokens 64] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

from evalkit.backends.native import NativeBackend
from evalkit.backends.openai_api import OpenAIBackend
from evalkit.data import DataConfig
from evalkit.requests import SamplingParams
from evalkit.serve import serving
from evalkit.serve.engines import NativeEngine
from evalkit.tasks import get_task


def tiny_checkpoint(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from mamba2_checkpoints import oracle, save_hf

    return save_hf(oracle(seed=0), folder / "tiny-mamba2")


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="native model name or checkpoint folder (default: a tiny random Mamba-2)")
    parser.add_argument("--prompts", type=int, default=32, help="HumanEval prompts")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--questions", type=int, default=8, help="MMLU questions (0: skip log-likelihoods)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences the model decodes together")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as scratch:
        spec = args.model or str(tiny_checkpoint(Path(scratch)))
        backend = NativeBackend.from_spec(spec, dtype=args.dtype, device=args.device, batch_size=args.batch_size)
        data = DataConfig.from_options()
        humaneval = get_task("humaneval", data)
        # a stop nothing matches, so every sample generates exactly --max-tokens tokens (unless it ends early)
        requests = [dataclasses.replace(humaneval.request(d), max_tokens=args.max_tokens, stop=())
                    for d in humaneval.docs()[: args.prompts]]
        mmlu = get_task("mmlu", data)
        questions = [mmlu.request(d) for d in mmlu.docs()[: args.questions]]
        greedy = SamplingParams()
        backend.generate(requests[:2], greedy)  # warm up outside the timing

        seconds, local = timed(lambda: backend.generate(requests, greedy))
        tokens = sum(c.info["completion_tokens"] for samples in local for c in samples)
        rows = [("in-process", "-", seconds, len(requests) / seconds, tokens / seconds, 1.0, "-", "-")]
        backend.batch_size = 1  # what one request at a time costs without HTTP
        one_seconds, _ = timed(lambda: backend.generate(requests, greedy))
        backend.batch_size = args.batch_size
        rows.append(("in-process", "bs 1", one_seconds, len(requests) / one_seconds, tokens / one_seconds,
                     seconds / one_seconds, "-", "-"))
        ll_rows = []
        if questions:
            ll_seconds, ll_local = timed(lambda: backend.loglikelihood(questions))
            ll_rows.append(("in-process", "-", ll_seconds, len(questions) / ll_seconds, 1.0, "-"))

        engine = NativeEngine("bench", backend)
        with serving(engine) as url:
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                client = OpenAIBackend(url, concurrency=concurrency)
                engine.worker.jobs_per_call.clear()
                http_seconds, remote = timed(lambda client=client: client.generate(requests, greedy))
                calls = engine.worker.jobs_per_call
                same = sum(r[0].text == x[0].text for r, x in zip(remote, local, strict=True))
                rows.append(("serve", str(concurrency), http_seconds, len(requests) / http_seconds,
                             tokens / http_seconds, seconds / http_seconds,
                             f"{sum(k * v for k, v in calls.items()) / max(1, sum(calls.values())):.1f}",
                             f"{same}/{len(requests)}"))
                if questions:
                    ll_http, ll_remote = timed(lambda client=client: client.loglikelihood(questions))
                    worst = max(abs(a - b) for r, x in zip(ll_remote, ll_local, strict=True)
                                for a, b in zip(r, x, strict=True))
                    ll_rows.append(("serve", str(concurrency), ll_http, len(questions) / ll_http,
                                    ll_seconds / ll_http, f"{worst:.1e}"))
        engine.worker.close()

    weight = next(backend.model.parameters())
    print(f"model {spec if args.model else 'tiny random Mamba-2'} ({backend.arch}, {weight.dtype}, {weight.device}), "
          f"batch size {args.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"\ngeneration: {len(requests)} HumanEval prompts, greedy, {args.max_tokens} new tokens, one request per "
          "sample over HTTP")
    print(f"{'path':10} {'conc.':>5} {'wall s':>7} {'samples/s':>9} {'tokens/s':>9} {'vs in-process':>13} "
          f"{'jobs/model call':>15} {'same text':>9}")
    for path, conc, secs, sps, tps, ratio, jobs, same in rows:
        print(f"{path:10} {conc:>5} {secs:7.2f} {sps:9.2f} {tps:9.1f} {ratio:13.2f} {jobs:>15} {same:>9}")
    if ll_rows:
        print(f"\nlog-likelihood: {len(questions)} MMLU questions (4 answers each)")
        print(f"{'path':10} {'conc.':>5} {'wall s':>7} {'questions/s':>11} {'vs in-process':>13} {'max |diff|':>10}")
        for path, conc, secs, qps, ratio, worst in ll_rows:
            print(f"{path:10} {conc:>5} {secs:7.2f} {qps:11.2f} {ratio:13.2f} {worst:>10}")


if __name__ == "__main__":
    main()
