"""Prefill and decode speed of evalkit's Mamba-2 against transformers' Mamba2ForCausalLM, same weights.

CPU, float32, d_model 256, 4 layers, d_state 128 (8 heads of 64 in 2 groups), vocab 32768, batch 1.

Prefill is measured the way generation uses it: the prompt goes into a fresh cache and only the last
position's logits are computed (transformers: use_cache=True, logits_to_keep=1). Decode is one token
at a time through each implementation's own cache, after a prompt of the given context length.
The two implementations run alternately in one process, so a busy machine slows both alike; each
figure is the median of the repeats after a warm-up. On a shared machine wall-clock time also counts
the time other processes hold the CPU, so the ratio of this thread's CPU time is printed beside it.

At batch 1, decode streams every weight from memory once per token, and the lm_head (vocab x d_model,
33.5 MB in fp32) is most of them. Its GEMV is timed alone both ways: as evalkit computes it
(evalkit.models.logits.vocab_logits) and as F.linear, which transformers uses; "ratio without lm_head"
compares what is left of each step.

    python benchmarks/bench_mamba2.py [--quick] [--threads N] [--vocab V]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from evalkit.models.logits import vocab_logits
from evalkit.models.mamba2 import Mamba2Config, Mamba2LM


def interleaved_medians(fns: list[Callable[[], object]], repeats: int) -> tuple[list[float], list[float]]:
    """Median wall-clock and thread-CPU seconds of each function, run in turn after one warm-up call each."""
    for fn in fns:
        fn()
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start_wall, start_cpu = time.perf_counter(), time.thread_time()
            fn()
            cpu[i].append(time.thread_time() - start_cpu)
            wall[i].append(time.perf_counter() - start_wall)
    return [statistics.median(w) for w in wall], [statistics.median(c) for c in cpu]


def build_models(vocab: int) -> tuple[Mamba2LM, torch.nn.Module]:
    from transformers import Mamba2Config as HFConfig
    from transformers import Mamba2ForCausalLM

    torch.manual_seed(0)
    hf_config = HFConfig(
        hidden_size=256,
        num_hidden_layers=4,
        state_size=128,
        head_dim=64,
        num_heads=8,
        n_groups=2,
        expand=2,
        conv_kernel=4,
        chunk_size=256,
        vocab_size=vocab,
        tie_word_embeddings=False,
    )
    hf = Mamba2ForCausalLM(hf_config).eval()
    ours = Mamba2LM(Mamba2Config.from_hf(hf_config.to_dict()))
    ours.load_state_dict(hf.state_dict())
    return ours.eval().requires_grad_(False), hf


class Decoder:
    """One implementation decoding greedily from a prompt of `context` tokens; call it for one more token."""

    def __init__(self, model: torch.nn.Module, context: int, vocab: int, hf: bool) -> None:
        ids = torch.randint(0, vocab, (1, context))
        self.model, self.hf = model, hf
        if hf:
            out = model(ids, use_cache=True, logits_to_keep=1)
            self.cache, logits = out.cache_params, out.logits
        else:
            self.cache = model.new_cache(1)
            logits = model.forward_cached(ids, self.cache, last_only=True)
        self.token = logits[:, -1].argmax(-1, keepdim=True)

    def __call__(self) -> None:
        if self.hf:
            logits = self.model(self.token, cache_params=self.cache, use_cache=True).logits
        else:
            logits = self.model.forward_cached(self.token, self.cache)
        self.token = logits[:, -1].argmax(-1, keepdim=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--vocab", type=int, default=32768, help="vocabulary size (default: Codestral's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats, steps = (3, 15) if args.quick else (5, 40)

    import transformers

    ours, hf = build_models(args.vocab)
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads, vocab {args.vocab}"
    )
    with torch.inference_mode():
        ids = torch.randint(0, args.vocab, (1, 300))
        print(f"max |logit difference| on 300 tokens: {(ours(ids) - hf(ids).logits).abs().max().item():.2e}")
        # transformers decodes through its cache (one token in, constant work) when given cache_params.
        prefix = hf(ids[:, :299], use_cache=True, logits_to_keep=1)
        step = hf(ids[:, 299:], cache_params=prefix.cache_params, use_cache=True).logits[:, -1]
        step_error = (step - hf(ids).logits[:, -1]).abs().max().item()
        print(f"transformers cached step vs full forward: {step_error:.2e}")

        print("\nprefill (tokens/s; prompt into a fresh cache, last-position logits)")
        print(f"{'tokens':>7} {'evalkit':>10} {'transformers':>13} {'ratio':>6}   cpu-time ratio")
        for length in (512, 2048, 8192):
            ids = torch.randint(0, args.vocab, (1, length))
            (t_ours, t_hf), (c_ours, c_hf) = interleaved_medians(
                [
                    lambda ids=ids: ours.forward_cached(ids, ours.new_cache(1), last_only=True),
                    lambda ids=ids: hf(ids, use_cache=True, logits_to_keep=1),
                ],
                repeats if length < 8192 else max(3, repeats - 2),
            )
            print(
                f"{length:>7} {length / t_ours:>10.0f} {length / t_hf:>13.0f} {t_hf / t_ours:>5.1f}x"
                f"   {c_hf / c_ours:>5.1f}x"
            )

        contexts = (512, 8192)
        decoders = [Decoder(m, c, args.vocab, hf=m is hf) for c in contexts for m in (ours, hf)]
        hidden = torch.randn(1, 256)
        weight = ours.lm_head.weight
        heads = [lambda: vocab_logits(hidden, weight), lambda: F.linear(hidden, weight)]
        times, cpu = interleaved_medians([*decoders, *heads], steps)
        head_ours, head_hf = times[-2] * 1000, times[-1] * 1000
        print(f"\ndecode (ms/token, batch 1, greedy; lm_head GEMV alone: {head_ours:.2f} ms as evalkit computes it, "
              f"{head_hf:.2f} ms as F.linear)")
        print(
            f"{'context':>7} {'evalkit':>10} {'transformers':>13} {'ratio':>6}   cpu-time ratio"
            "   ratio without lm_head"
        )
        for i, context in enumerate(contexts):
            d_ours, d_hf = times[2 * i] * 1000, times[2 * i + 1] * 1000
            body = (d_hf - head_hf) / max(d_ours - head_ours, 1e-9)
            cpu_ratio = cpu[2 * i + 1] / cpu[2 * i]
            print(
                f"{context:>7} {d_ours:>10.2f} {d_hf:>13.2f} {d_hf / d_ours:>5.1f}x   {cpu_ratio:>5.1f}x"
                f"            {body:>5.1f}x"
            )
        print(f"evalkit decode at 8192 / at 512: {times[2] / times[0]:.2f} (flat: within 0.90-1.10)")


if __name__ == "__main__":
    main()
