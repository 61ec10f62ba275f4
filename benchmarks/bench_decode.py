"""Batched decode speed: evalkit's generate_batch next to transformers' generate, same checkpoint, one process.

Two tiny random checkpoints are written by the benchmark (transformers' save_pretrained) and loaded by
both sides: Mamba-2 (d_model 256, 4 layers, d_state 128, 8 heads of 64 in 2 groups) and a sliding-window
Mistral (d_model 256, 4 layers, 4 query / 2 KV heads of 64, MLP 896, W=128), both with Codestral's
32768-token vocabulary.

Cases: greedy at batch 1, 8 and 32 (one sample per prompt), and sampled (temperature 0.8, top-p 0.95)
with n=10 samples per prompt, 1 and 3 prompts (batch 10 and 30). Every prompt has 64 tokens, so
transformers needs no padding, and every sequence runs to max_new_tokens (no eos), so both sides do the
same work. The window (128) is crossed: 64 + 128 tokens.

Decode tokens/s = rows x (N - 1) / (t(N) - t(1)), where t(k) is the time of a whole call generating k
tokens per row: the difference takes prefill and set-up out, leaving the N - 1 cached decode steps.
The implementations run alternately (median of the repeats), so load from other processes hits both.
Figures by wall clock, and [in brackets] by the process's CPU time: on a shared machine the wall clock
also counts the time other processes hold the CPU; with one thread the CPU time does not (with more,
it counts threads spinning while they wait). Greedy rows also check that both sides produce the same
tokens. --cuda-graphs adds evalkit with its decode steps replayed from CUDA graphs (GPU only); the
ratio is then evalkit's best against transformers.

    python benchmarks/bench_decode.py [--quick] [--threads N] [--device cuda --dtype bfloat16 --cuda-graphs]
                                      [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from evalkit.models import load_model
from evalkit.models.generate import GenerationJob, generate_batch

PROMPT = 64
VOCAB = 32768
WINDOW = 128
NEVER = -1  # an eos id no token equals: every sequence runs to max_new_tokens


@dataclass(frozen=True)
class Case:
    prompts: int
    samples: int  # per prompt; > 1 means sampled, else greedy

    @property
    def rows(self) -> int:
        return self.prompts * self.samples

    @property
    def label(self) -> str:
        if self.samples == 1:
            return f"greedy, batch {self.rows}"
        return f"n={self.samples} sampled, batch {self.rows}"


CASES = (Case(1, 1), Case(8, 1), Case(32, 1), Case(1, 10), Case(3, 10))
TEMPERATURE, TOP_P = 0.8, 0.95


def write_checkpoints(root: str) -> dict[str, str]:
    """Random transformers models saved as Hugging Face checkpoints; name -> directory."""
    from transformers import Mamba2Config, Mamba2ForCausalLM, MistralConfig, MistralForCausalLM

    configs = {
        "mamba2": (
            Mamba2ForCausalLM,
            Mamba2Config(
                hidden_size=256, num_hidden_layers=4, state_size=128, head_dim=64, num_heads=8, n_groups=2,
                expand=2, conv_kernel=4, chunk_size=256, vocab_size=VOCAB, tie_word_embeddings=False,
                bos_token_id=1, eos_token_id=2, pad_token_id=0,
            ),
        ),
        "mistral-swa": (
            MistralForCausalLM,
            MistralConfig(
                vocab_size=VOCAB, hidden_size=256, intermediate_size=896, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, head_dim=64, sliding_window=WINDOW,
                rope_theta=1e6, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=0,
            ),
        ),
    }
    paths = {}
    for name, (cls, config) in configs.items():
        torch.manual_seed(0)
        model = cls(config)
        with torch.no_grad():  # the default init (std 0.02) gives near-uniform logits: too many ties
            for p in model.parameters():
                if p.dim() == 2:
                    p.normal_(0.0, 0.1)
        paths[name] = os.path.join(root, name)
        model.save_pretrained(paths[name])
    return paths


def load_hf(path: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if hasattr(model.config, "_attn_implementation"):
        model.config._attn_implementation = "sdpa"
    return model.to(device).eval().requires_grad_(False)


def ours_fn(model, prompts: torch.Tensor, case: Case, new: int, **options) -> Callable[[], list[list[int]]]:
    jobs = [
        GenerationJob(prompt_ids=p.tolist(), max_new_tokens=new, seeds=[1000 * i + s for s in range(case.samples)])
        for i, p in enumerate(prompts)
    ]
    sampled = case.samples > 1

    def run() -> list[list[int]]:
        results = generate_batch(
            model, jobs, decode=lambda _p, _ids: "", eos_id=NEVER, temperature=TEMPERATURE if sampled else 0.0,
            top_p=TOP_P if sampled else 1.0, batch_size=case.rows, **options,
        )
        return [c.ids for samples in results for c in samples]

    return run


def hf_fn(model, prompts: torch.Tensor, case: Case, new: int) -> Callable[[], list[list[int]]]:
    ids = prompts.to(model.device)
    sampling = (
        dict(do_sample=True, temperature=TEMPERATURE, top_p=TOP_P, top_k=0, num_return_sequences=case.samples)
        if case.samples > 1
        else dict(do_sample=False)
    )

    def run() -> list[list[int]]:
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new, eos_token_id=None,
            pad_token_id=0, use_cache=True, **sampling,
        )
        return out[:, ids.shape[1] :].tolist()

    return run


def timed(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of one call."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def decode_rates(fns: dict[str, tuple[Callable, Callable]], rows: int, new: int, repeats: int,
                 device: torch.device) -> dict[str, tuple[float, float]]:
    """Decode tokens/s of each (N-token call, 1-token call) pair, by wall clock and by CPU time; the pairs
    run in turn, so load from other processes hits all of them alike."""
    for long, short in fns.values():  # warm-up
        long(), short()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (long, short) in fns.items():
            (wall_n, cpu_n), (wall_1, cpu_1) = timed(long, device), timed(short, device)
            times[name].append((wall_n - wall_1, cpu_n - cpu_1))
    tokens = rows * (new - 1)

    def rate(seconds: float) -> float:  # nan when load swamped the difference
        return tokens / seconds if seconds > 0 else math.nan

    return {name: tuple(rate(statistics.median(t[i] for t in ts)) for i in (0, 1)) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="32 new tokens instead of 128, 2 repeats instead of 3")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--models", default="mamba2,mistral-swa", help="comma-separated subset")
    parser.add_argument("--cuda-graphs", action="store_true", help="also evalkit with cuda_graphs=True")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    new, repeats = (32, 2) if args.quick else (128, 3)

    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {name}, {args.dtype}, "
          f"{torch.get_num_threads()} threads; prompt {PROMPT} tokens, {new} new tokens per row; "
          "decode tokens/s by wall clock, [by process CPU time]")
    ours_names = ["evalkit"] + (["evalkit+graphs"] if args.cuda_graphs else [])
    rows_out = []
    with tempfile.TemporaryDirectory() as root:
        paths = write_checkpoints(root)
        for model_name in args.models.split(","):
            ours = load_model(paths[model_name], dtype=dtype, device=device)
            hf = load_hf(paths[model_name], device, dtype)
            print(f"\n{model_name}")
            header = "".join(f"{n:>22}" for n in ours_names)
            print(f"{'case':>24}{header}{'transformers':>22} {'ratio':>13}  same tokens")
            gen = torch.Generator().manual_seed(0)
            for case in CASES:
                prompts = torch.randint(3, VOCAB, (case.prompts, PROMPT), generator=gen)
                fns = {"evalkit": (ours_fn(ours, prompts, case, new), ours_fn(ours, prompts, case, 1))}
                if args.cuda_graphs:
                    fns["evalkit+graphs"] = (ours_fn(ours, prompts, case, new, cuda_graphs=True),
                                             ours_fn(ours, prompts, case, 1, cuda_graphs=True))
                fns["transformers"] = (hf_fn(hf, prompts, case, new), hf_fn(hf, prompts, case, 1))
                with torch.inference_mode():
                    rates = decode_rates(fns, case.rows, new, repeats, device)
                    same = "-"
                    if case.samples == 1:
                        ref = fns["transformers"][0]()
                        same = "yes" if all(fns[n][0]() == ref for n in ours_names) else "NO"
                best = max(rates[n][0] for n in ours_names)
                ratio, cpu_ratio = best / rates["transformers"][0], rates["evalkit"][1] / rates["transformers"][1]
                cells = "".join(f"{rates[n][0]:>11.0f} [{rates[n][1]:>7.0f}]" for n in [*ours_names, "transformers"])
                print(f"{case.label:>24}{cells} {ratio:>5.2f}x [{cpu_ratio:>4.2f}x]  {same}")
                rows_out.append(dict(model=model_name, case=case.label, rows=case.rows, same_tokens=same,
                                     ratio=ratio, cpu_time_ratio=cpu_ratio,
                                     **{f"{n}_tok_s": rates[n][0] for n in rates},
                                     **{f"{n}_cpu_tok_s": rates[n][1] for n in rates}))
            del ours, hf
    if args.json:
        meta = dict(device=args.device, device_name=name, dtype=args.dtype, threads=torch.get_num_threads(),
                    torch=torch.__version__, transformers=transformers.__version__, prompt=PROMPT, new_tokens=new,
                    repeats=repeats, load_average=os.getloadavg())
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows_out}, f, indent=2)


if __name__ == "__main__":
    main()
