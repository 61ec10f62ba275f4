"""Prefill and decode speed of evalkit's Mamba-2 against transformers' Mamba2ForCausalLM, same weights.

CPU, float32, d_model 256, 4 layers, d_state 128, batch 1. Prefill is measured the way generation uses
it: the prompt goes into a fresh cache and only the last position's logits are computed (transformers:
use_cache=True, logits_to_keep=1); a full-logits forward is printed too. Decode is one token at a time
through each implementation's cache, after a prompt of the given context length.

    python benchmarks/bench_mamba2.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from evalkit.models.mamba2 import Mamba2Config, Mamba2LM

VOCAB = 32768


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_models() -> tuple[Mamba2LM, torch.nn.Module]:
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
        vocab_size=VOCAB,
        tie_word_embeddings=False,
    )
    hf = Mamba2ForCausalLM(hf_config).eval()
    ours = Mamba2LM(Mamba2Config.from_hf(hf_config.to_dict()))
    ours.load_state_dict(hf.state_dict())
    return ours.eval().requires_grad_(False), hf


def prefill_ours(model: Mamba2LM, ids: torch.Tensor) -> torch.Tensor:
    return model.forward_cached(ids, model.new_cache(ids.shape[0]), last_only=True)


def prefill_hf(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(ids, use_cache=True, logits_to_keep=1).logits


def decode_ms_ours(model: Mamba2LM, context: int, steps: int) -> float:
    ids = torch.randint(0, VOCAB, (1, context))
    cache = model.new_cache(1)
    token = model.forward_cached(ids, cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        token = model.forward_cached(token, cache)[:, -1].argmax(-1, keepdim=True)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[2:])


def decode_ms_hf(model: torch.nn.Module, context: int, steps: int) -> float:
    ids = torch.randint(0, VOCAB, (1, context))
    out = model(ids, use_cache=True, logits_to_keep=1)
    cache, token = out.cache_params, out.logits[:, -1].argmax(-1, keepdim=True)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        out = model(token, cache_params=cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[2:])


def check_same_outputs(ours: Mamba2LM, hf: torch.nn.Module) -> float:
    ids = torch.randint(0, VOCAB, (1, 300))
    return (ours(ids) - hf(ids).logits).abs().max().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats, steps = (3, 12) if args.quick else (5, 40)

    import transformers

    ours, hf = build_models()
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    with torch.inference_mode():
        print(f"max |logit difference| on 300 tokens: {check_same_outputs(ours, hf):.2e}")
        print("\nprefill (tokens/s; into a cache, last-position logits)")
        print(
            f"{'tokens':>7} {'evalkit':>10} {'transformers':>13} {'ratio':>6}"
            "   full-logits: evalkit / transformers"
        )
        for length in (512, 2048, 8192):
            ids = torch.randint(0, VOCAB, (1, length))
            n = repeats if length < 8192 else max(2, repeats - 2)
            t_ours = median_seconds(lambda ids=ids: prefill_ours(ours, ids), n)
            t_hf = median_seconds(lambda ids=ids: prefill_hf(hf, ids), n)
            f_ours = median_seconds(lambda ids=ids: ours(ids), n)
            f_hf = median_seconds(lambda ids=ids: hf(ids).logits, n)
            print(
                f"{length:>7} {length / t_ours:>10.0f} {length / t_hf:>13.0f} {t_hf / t_ours:>5.1f}x"
                f"   {length / f_ours:>8.0f} / {length / f_hf:.0f} ({f_hf / f_ours:.1f}x)"
            )

        print("\ndecode (ms/token, batch 1, greedy)")
        print(f"{'context':>7} {'evalkit':>10} {'transformers':>13} {'ratio':>6}")
        results = {}
        for context in (512, 8192):
            d_ours = decode_ms_ours(ours, context, steps)
            d_hf = decode_ms_hf(hf, context, steps)
            results[context] = (d_ours, d_hf)
            print(f"{context:>7} {d_ours:>10.2f} {d_hf:>13.2f} {d_hf / d_ours:>5.1f}x")
        flat = results[8192][0] / results[512][0]
        print(f"evalkit decode at 8192 / at 512: {flat:.2f} (flat means within 1.10)")


if __name__ == "__main__":
    main()
