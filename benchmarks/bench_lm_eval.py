"""lm-eval tasks on a Mamba-2 model on the CPU: lm-eval's `hf` model (transformers' Mamba-2, whose fast path
needs mamba_ssm and CUDA) next to the evalkit bridge (evalkit's Mamba-2), on the same random checkpoint.

The checkpoint is a random Mamba2ForCausalLM in Hugging Face format with Mistral's v3 tokenizer file; the
tasks are the local ones of tests/lm_eval_tasks (multiple choice, greedy generation of up to 12 tokens,
perplexity). Each task is timed for both models, interleaved, and the per-sample log-likelihoods are checked
to agree. Usage:
    python benchmarks/bench_lm_eval.py [--hidden 768] [--layers 12] [--repeats 1] [--threads 1]   (~1.5 min)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import lm_eval
import mistral_common
import torch
import transformers
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from evalkit.lm_eval import EvalkitLM

TASKS = ("evalkit_mc", "evalkit_gen", "evalkit_ppl")
TASKS_DIR = Path(__file__).resolve().parents[1] / "tests" / "lm_eval_tasks"


def write_checkpoint(directory: Path, hidden: int, layers: int) -> Path:
    torch.manual_seed(0)
    config = transformers.Mamba2Config(hidden_size=hidden, num_hidden_layers=layers, num_heads=2 * hidden // 64,
                                       head_dim=64, n_groups=1, vocab_size=32768, tie_word_embeddings=False,
                                       bos_token_id=1, eos_token_id=2, pad_token_id=0)
    transformers.Mamba2ForCausalLM(config).save_pretrained(directory)
    tokenizer = Path(mistral_common.__file__).parent / "data" / "mistral_instruct_tokenizer_240323.model.v3"
    shutil.copy(tokenizer, directory / "tokenizer.model.v3")
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MistralCommonBackend"}))
    return directory


def numbers(value) -> list[float]:
    """The log-likelihoods in lm-eval's nested per-sample responses (is_greedy flags left out)."""
    if isinstance(value, float):
        return [value]
    if isinstance(value, list | tuple):
        return [x for item in value for x in numbers(item)]
    return []


def timed(model, task: str, manager: TaskManager) -> tuple[float, list]:
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(model=model, tasks=[task], task_manager=manager, log_samples=True,
                                  verbosity="ERROR")
    return time.perf_counter() - start, [s["resps"] for s in out["samples"][task]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_checkpoint(Path(tmp) / "mamba2", args.hidden, args.layers)
        hf = HFLM(pretrained=str(ckpt), dtype="float32", device="cpu", batch_size=1, max_length=2048)
        ours = EvalkitLM(model=str(ckpt), device="cpu", dtype="float32")
        print(f"Mamba-2 d_model={args.hidden} layers={args.layers}, float32, CPU, {args.threads} thread(s); "
              f"median of {args.repeats}")
        print(f"{'task':12s} {'lm-eval hf (s)':>15s} {'evalkit (s)':>12s} {'hf / evalkit':>13s}")
        for task in TASKS:
            hf_times, our_times = [], []
            # HFLM encodes a perplexity document with bos and then puts its prefix bos in front of it; without
            # the tokenizer's bos it scores what lm-eval's rolling windows define, as the bridge does.
            hf.add_bos_token = False if task == "evalkit_ppl" else None
            for _ in range(args.repeats):
                seconds, hf_resps = timed(hf, task, manager)
                hf_times.append(seconds)
                seconds, our_resps = timed(ours, task, manager)
                our_times.append(seconds)
            if task != "evalkit_gen":  # the same log-likelihoods, or the timing would compare different work
                for a, b in zip(numbers(hf_resps), numbers(our_resps), strict=True):
                    assert abs(a - b) < 1e-3, (task, a, b)
            hf_s, our_s = statistics.median(hf_times), statistics.median(our_times)
            print(f"{task:12s} {hf_s:15.2f} {our_s:12.2f} {hf_s / our_s:13.1f}")


if __name__ == "__main__":
    main()
