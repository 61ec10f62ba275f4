"""Generation throughput of the hf: backend: exact batching at batch 1 and 8, next to the native backend on the
same checkpoint and to transformers' own left-padded batched `generate` (what lm-eval's HFLM runs).

CPU, float32, a random Mistral-layout checkpoint (d_model 256, 4 layers, 4 query / 2 KV heads, window 64,
vocab 32768) with the real v3 tokenizer; PROMPTS prompts of 8 to ~120 tokens, greedy, TOKENS new tokens each,
EOS made unlikely (rows run to the limit). Figures are generated tokens per second over the wall clock of the whole
batch of prompts, median of --repeats runs, the setups run alternately so that load from other processes
hits all alike. "same as exact" counts completions equal to the hf: backend's.

    python benchmarks/bench_hf.py [--prompts 16] [--tokens 48] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from evalkit.backends.hf import HFBackend
from evalkit.backends.mistral_tokenizers import shipped_file
from evalkit.backends.native import NativeBackend
from evalkit.requests import GenerationRequest, SamplingParams

WORDS = "def fib ( n ) : return n if n < 2 else fib ( n - 1 ) + fib ( n - 2 ) # the".split()


def checkpoint(directory: Path) -> Path:
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=32768, hidden_size=256, intermediate_size=896, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=64, sliding_window=64,
                           bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = MistralForCausalLM(config).eval()
    with torch.no_grad():  # EOS's logit is 0, below the top of 32768 random ones: rows run to the limit
        model.lm_head.weight[2].zero_()
    model.save_pretrained(directory)
    shutil.copy(shipped_file("v3"), directory)
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MistralCommonBackend"}))
    return directory


def prompts(n: int) -> list[str]:
    return [" ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(6 + (i * 37) % 90)) for i in range(n)]


def exact(backend, texts: list[str], tokens: int) -> tuple[list[str], int]:
    """Completions and the number of tokens generated."""
    requests = [GenerationRequest(f"p{i}", t, max_tokens=tokens) for i, t in enumerate(texts)]
    out = backend.generate(requests, SamplingParams())
    return [c[0].text for c in out], sum(c[0].info["completion_tokens"] for c in out)


@torch.inference_mode()
def padded(backend: HFBackend, texts: list[str], tokens: int, batch_size: int) -> tuple[list[str], int]:
    """transformers' generate on left-padded batches, longest first (HFLM's order), decoded after the prompt."""
    order = sorted(range(len(texts)), key=lambda i: -len(backend.encode(texts[i])))
    out: dict[int, str] = {}
    generated = 0
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids = [backend.encode(texts[i]) for i in chunk]
        width = max(map(len, ids))
        input_ids = torch.zeros(len(ids), width, dtype=torch.long)
        mask = torch.zeros(len(ids), width, dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
        new = backend.model.generate(input_ids, attention_mask=mask, max_new_tokens=tokens, do_sample=False,
                                     pad_token_id=0)[:, width:]
        for row, i in enumerate(chunk):
            ids_ = new[row].tolist()
            ids_ = ids_[: ids_.index(2)] if 2 in ids_ else ids_
            generated += len(ids_)
            out[i] = backend.decode_continuation(ids[row], ids_)
    return [out[i] for i in range(len(texts))], generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = prompts(args.prompts)
    with tempfile.TemporaryDirectory() as tmp:
        path = checkpoint(Path(tmp) / "ckpt")
        hf = HFBackend.from_spec(str(path), dtype="float32", device="cpu", batch_size=8)
        hf1 = HFBackend(hf.model, hf.tokenizer, spec=hf.spec, path=hf.path, batch_size=1)
        native = NativeBackend.from_spec(str(path), dtype="float32", device="cpu", batch_size=8)
        setups = {
            "hf: exact, batch 1": lambda: exact(hf1, texts, args.tokens),
            "hf: exact, batch 8": lambda: exact(hf, texts, args.tokens),
            "native, batch 8": lambda: exact(native, texts, args.tokens),
            "transformers generate, left-padded batch 8": lambda: padded(hf, texts, args.tokens, 8),
        }
        times: dict[str, list[float]] = {name: [] for name in setups}
        outputs: dict[str, list[str]] = {}
        generated: dict[str, int] = {}
        for name, run in setups.items():  # warm-up, and the outputs compared below
            outputs[name], generated[name] = run()
        for _ in range(args.repeats):
            for name, run in setups.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    lengths = [len(hf.encode(t)) for t in texts]
    print(f"{args.prompts} prompts of {min(lengths)}-{max(lengths)} tokens, {args.tokens} new tokens each, "
          f"float32 CPU, {args.threads} thread(s), median of {args.repeats}")
    base = generated["hf: exact, batch 1"] / statistics.median(times["hf: exact, batch 1"])
    reference = outputs["hf: exact, batch 8"]
    print(f"{'setup':<44} {'tokens':>7} {'tokens/s':>9} {'vs batch 1':>11} {'same as exact':>14}")
    for name in setups:
        seconds = statistics.median(times[name])
        same = sum(a == b for a, b in zip(outputs[name], reference, strict=True))
        rate = generated[name] / seconds
        print(f"{name:<44} {generated[name]:>7} {rate:>9.0f} {rate / base:>10.2f}x {same:>8}/{len(reference)}")


if __name__ == "__main__":
    main()
