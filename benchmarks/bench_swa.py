"""Sliding-window attention speed and memory: evalkit's Mistral decoder next to transformers'
MistralForCausalLM, same config, same weights, one process.

CPU, float32, d_model 256, 4 layers, 4 query heads / 2 KV heads of 64, vocab 32768, batch 1.

- prefill: tokens/s of a prompt into a fresh cache with last-position logits (what generation does;
  transformers: use_cache=True, logits_to_keep=1), W=1024, at 2048 and 8192 tokens;
- decode: ms/token, greedy, after a context of 1024 or 16384 tokens (prefilled in chunks of 2048), with
  W=1024 and without a window;
- memory: KV-cache bytes and peak resident memory while decoding at 16384 tokens, with and without W,
  each in a fresh process (evalkit only).

Timings are medians after a warm-up (prefill) or of the steps (decode); the two implementations run
alternately so that load from other processes hits both alike. On a busy machine use --threads 1.

    python benchmarks/bench_swa.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch

from evalkit.bench import PeakMemory, memory_in_use, return_freed_memory_to_os
from evalkit.models.mistral import Mistral, MistralConfig, load_mistral

CPU = torch.device("cpu")

VOCAB = 32768
WINDOW = 1024


def build(window: int | None, workdir: str) -> tuple[Mistral, torch.nn.Module]:
    """transformers' model with random weights, and ours loaded from its save_pretrained files."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=VOCAB,
        hidden_size=256,
        intermediate_size=896,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        sliding_window=window,
        rope_theta=1e6,
        rms_norm_eps=1e-5,
        attn_implementation="sdpa",
        eos_token_id=None,
        bos_token_id=None,
    )
    hf = MistralForCausalLM(config).eval().requires_grad_(False)
    path = os.path.join(workdir, f"w{window}")
    hf.save_pretrained(path)
    return load_mistral(path, dtype=torch.float32, device="cpu"), hf


def alternate(fns: list[Callable[[], object]], repeats: int, warmup: int = 1) -> list[float]:
    """Median seconds of each function, calls interleaved round by round."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
    return [statistics.median(ts) for ts in times]


def prefill_ours(model: Mistral, ids: torch.Tensor) -> torch.Tensor:
    return model.forward_cached(ids, model.new_cache(ids.shape[0]), last_only=True)


def prefill_hf(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(ids, use_cache=True, logits_to_keep=1).logits


def decode_both(ours: Mistral, hf: torch.nn.Module, context: torch.Tensor, steps: int) -> tuple[float, float]:
    """Median ms per greedy step after `context`, the two models stepping alternately."""
    cache = ours.new_cache(1)
    hf_cache = None
    for start in range(0, context.shape[1], 2048):  # chunked prefill: bounded transient memory
        chunk = context[:, start : start + 2048]
        logits = ours.forward_cached(chunk, cache, last_only=True)
        out = hf(chunk, past_key_values=hf_cache, use_cache=True, logits_to_keep=1)
        hf_cache = out.past_key_values
    token, hf_token = logits[:, -1].argmax(-1, keepdim=True), out.logits[:, -1].argmax(-1, keepdim=True)
    times, hf_times = [], []
    for _ in range(steps):
        start = time.perf_counter()
        token = ours.forward_cached(token, cache)[:, -1].argmax(-1, keepdim=True)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        out = hf(hf_token, past_key_values=hf_cache, use_cache=True)
        hf_token = out.logits[:, -1].argmax(-1, keepdim=True)
        hf_times.append(time.perf_counter() - start)
    return median_ms(times), median_ms(hf_times)


def median_ms(times: list[float]) -> float:
    return 1000 * statistics.median(times[2:])


def memory_child(window: int | None, steps: int) -> None:
    """Run in a fresh process: print JSON with the KV-cache bytes and the peak RSS above the baseline
    (model built, nothing else) while prefilling 16384 tokens in chunks of 1024 and while decoding."""
    return_freed_memory_to_os()
    torch.manual_seed(0)
    cfg = MistralConfig(
        dim=256,
        n_layers=4,
        n_heads=4,
        n_kv_heads=2,
        head_dim=64,
        hidden_dim=896,
        vocab_size=VOCAB,
        sliding_window=window,
    )
    model = Mistral(cfg).eval().requires_grad_(False)
    context = torch.randint(0, VOCAB, (1, 16384))
    with torch.inference_mode():
        model.forward_cached(context[:, :8], model.new_cache(1))  # warm-up: one-time allocations
        gc.collect()
        base = memory_in_use(CPU)
        cache = model.new_cache(1)
        with PeakMemory(CPU) as prefill:
            for start in range(0, context.shape[1], 1024):
                logits = model.forward_cached(context[:, start : start + 1024], cache, last_only=True)
        token = logits[:, -1].argmax(-1, keepdim=True)
        with PeakMemory(CPU) as decode:
            for _ in range(steps):
                token = model.forward_cached(token, cache)[:, -1].argmax(-1, keepdim=True)
    result = {
        "cache": cache.nbytes(),
        "slots": cache.slots,
        "prefill": prefill.peak - base,
        "decode": decode.peak - base,
    }
    print(json.dumps(result))


def decode_memory(window: int | None, steps: int) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", str(window or 0), "--steps", str(steps)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child or None, args.steps)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats, steps = (2, 16) if args.quick else (3, 64)

    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")
    gen = torch.Generator().manual_seed(1)
    with tempfile.TemporaryDirectory() as workdir, torch.inference_mode():
        models = {WINDOW: build(WINDOW, workdir), None: build(None, workdir)}
        ours, hf = models[WINDOW]
        check = torch.randint(0, VOCAB, (1, 3000), generator=gen)
        print(
            f"max |logit difference| vs transformers, 3000 tokens, W={WINDOW}: "
            f"{(ours(check) - hf(check).logits).abs().max().item():.2e}"
        )

        print(f"\nprefill, W={WINDOW} (tokens/s; into a cache, last-position logits)")
        print(f"{'tokens':>7} {'evalkit':>10} {'transformers':>13} {'ratio':>6}")
        for length in (2048, 8192):
            ids = torch.randint(0, VOCAB, (1, length), generator=gen)
            fns = [lambda ids=ids: prefill_ours(ours, ids), lambda ids=ids: prefill_hf(hf, ids)]
            t_ours, t_hf = alternate(fns, repeats)
            print(f"{length:>7} {length / t_ours:>10.0f} {length / t_hf:>13.0f} {t_hf / t_ours:>5.1f}x")

        print("\ndecode (ms/token, batch 1, greedy, median of the steps)")
        print(f"{'window':>7} {'context':>8} {'evalkit':>9} {'transformers':>13} {'ratio':>6}")
        decode: dict[tuple[int | None, int], float] = {}
        for window, (ours, hf) in models.items():
            for context in (1024, 16384):
                ids = torch.randint(0, VOCAB, (1, context), generator=gen)
                d_ours, d_hf = decode_both(ours, hf, ids, steps)
                decode[window, context] = d_ours
                label = str(window) if window else "none"
                print(f"{label:>7} {context:>8} {d_ours:>9.2f} {d_hf:>13.2f} {d_hf / d_ours:>5.1f}x")
        for window in models:
            label = f"W={window}" if window else "no window"
            print(f"evalkit {label}: decode at 16384 / at 1024 = {decode[window, 16384] / decode[window, 1024]:.2f}")

    print("\nmemory at 16384 tokens (evalkit; MB; each case in a fresh process with the model built)")
    print("  peak = the kernel's peak resident size (VmHWM, reset per phase) above that baseline, large allocations")
    print("  served by mmap so that freed tensors leave the resident set; tracemalloc cannot be used: torch")
    print("  allocates tensor storage outside Python's allocator. Prefill: 16 chunks of 1024 tokens.")
    print(f"{'window':>7} {'KV slots':>9} {'KV cache':>9} {'decode peak':>12} {'prefill peak':>13}")
    for window in (WINDOW, None):
        m = decode_memory(window, steps)
        label = str(window) if window else "none"
        cache, decode, prefill = (m[key] / 1e6 for key in ("cache", "decode", "prefill"))
        print(f"{label:>7} {m['slots']:>9} {cache:>9.1f} {decode:>12.1f} {prefill:>13.1f}")


if __name__ == "__main__":
    main()
