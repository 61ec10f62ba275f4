"""The lm-eval bridge (evalkit/lm_eval.py) against lm-eval's own `hf` model, on tiny random checkpoints.

Both models read the same Hugging Face checkpoint folder, which carries Mistral's v3 tokenizer file from the
mistral-common wheel (AutoTokenizer loads it as MistralCommonBackend), and run the local tasks of
tests/lm_eval_tasks (JSON files on disk). Per sample, log-likelihoods agree to 1e-4, predictions are equal and
greedy generations are equal.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # lm-eval's `hf` model imports it

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from evalkit.backends.base import Backend  # noqa: E402
from evalkit.backends.mistral_tokenizers import write_autotokenizer_files  # noqa: E402
from evalkit.cli import app  # noqa: E402
from evalkit.lm_eval import EvalkitLM, LmEvalError, lm_eval_argv  # noqa: E402
from evalkit.requests import Completion, GenerationRequest, SamplingParams  # noqa: E402

TASKS_DIR = Path(__file__).parent / "lm_eval_tasks"
MAX_LENGTH = 16  # tokens per perplexity window: every document spans two windows or more
ATOL = 1e-4
REPO = Path(__file__).resolve().parents[1]


def tiny_mistral(directory: Path) -> Path:
    """A 2-layer MistralForCausalLM with the v3 vocabulary, weights large enough to make attention matter."""
    torch.manual_seed(0)
    cfg = transformers.MistralConfig(vocab_size=32768, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                                     bos_token_id=1, eos_token_id=2)
    model = transformers.MistralForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.15)
            else:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(directory)
    write_autotokenizer_files(directory)
    return directory


def tiny_mamba2(directory: Path) -> Path:
    from mamba2_checkpoints import oracle, save_hf

    save_hf(oracle(seed=0, hidden_size=64), directory)
    write_autotokenizer_files(directory)
    return directory


CHECKPOINTS = {"mistral": tiny_mistral, "mamba2": tiny_mamba2}
# transformers' Mamba-2 runs its slow reference path without mamba_ssm: three documents per task for it.
LIMIT = {"mistral": None, "mamba2": 3}


@pytest.fixture(scope="module")
def task_manager() -> TaskManager:
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)  # the local tasks only (fast)


@pytest.fixture(scope="module", params=sorted(CHECKPOINTS))
def compared(request, tmp_path_factory, task_manager):
    """(checkpoint, hf samples, evalkit samples, the bridge) for the local tasks, per architecture."""
    from lm_eval.models.huggingface import HFLM

    ckpt = CHECKPOINTS[request.param](tmp_path_factory.mktemp(request.param))
    limit = LIMIT[request.param]
    # HFLM cuts prompts to its max_length from the left, silently: the short window is for perplexity only.
    hf = HFLM(pretrained=str(ckpt), dtype="float32", device="cpu", batch_size=1, max_length=2048)
    hf_out = lm_eval.simple_evaluate(model=hf, tasks=["evalkit_mc", "evalkit_gen"], task_manager=task_manager,
                                     log_samples=True, limit=limit)
    hf_rolling = HFLM(pretrained=str(ckpt), dtype="float32", device="cpu", batch_size=1, max_length=MAX_LENGTH)
    # With its default settings HFLM encodes a perplexity document with the tokenizer's bos and then puts its
    # prefix token (bos) in front, scoring a bos after a bos, which lm-eval's rolling-window definition
    # (the document's tokens, conditioned on the prefix token) does not have.
    hf_rolling.add_bos_token = False
    hf_ppl = lm_eval.simple_evaluate(model=hf_rolling, tasks=["evalkit_ppl"], task_manager=task_manager,
                                     log_samples=True, limit=limit)
    bridge = EvalkitLM(model=str(ckpt), max_length=MAX_LENGTH, device="cpu")
    ours = lm_eval.simple_evaluate(model=bridge, task_manager=task_manager, log_samples=True, limit=limit,
                                   tasks=["evalkit_mc", "evalkit_gen", "evalkit_ppl"])
    return ckpt, hf_out["samples"] | hf_ppl["samples"], ours, bridge


def by_doc(samples: list[dict]) -> dict[int, dict]:
    return {s["doc_id"]: s for s in samples}


def test_multiple_choice_equals_hf(compared):
    _, hf, ours, _ = compared
    theirs, mine = by_doc(hf["evalkit_mc"]), by_doc(ours["samples"]["evalkit_mc"])
    assert sorted(theirs) == sorted(mine) == list(range(len(mine))) and len(mine) >= 3
    for doc_id, sample in mine.items():
        ll_hf = [r[0][0] for r in theirs[doc_id]["resps"]]  # resps: one [(log-likelihood, is_greedy)] per choice
        ll_ours = [r[0][0] for r in sample["resps"]]
        assert len(ll_ours) == 4
        assert ll_ours == pytest.approx(ll_hf, abs=ATOL), doc_id
        assert [r[0][1] for r in sample["resps"]] == [r[0][1] for r in theirs[doc_id]["resps"]]
        assert sample["acc"] == theirs[doc_id]["acc"] and sample["acc_norm"] == theirs[doc_id]["acc_norm"]
        assert max(range(4), key=ll_ours.__getitem__) == max(range(4), key=ll_hf.__getitem__)  # the prediction


def test_greedy_generations_equal_hf(compared):
    _, hf, ours, _ = compared
    theirs, mine = by_doc(hf["evalkit_gen"]), by_doc(ours["samples"]["evalkit_gen"])
    assert sorted(theirs) == sorted(mine) == list(range(len(mine))) and len(mine) >= 3
    for doc_id, sample in mine.items():
        (text,) = sample["resps"][0]
        (hf_text,) = theirs[doc_id]["resps"][0]
        assert text.strip(), doc_id
        # HFLM decodes the new tokens alone, and SentencePiece drops the space of a first word piece ("▁word");
        # the bridge returns the text as it reads after the prompt, so it may keep that one space.
        assert text in (hf_text, " " + hf_text), doc_id
        assert not any(stop in text for stop in ("\n", "Q:")), doc_id


def test_perplexity_equals_hf_rolling_windows(compared):
    _, hf, ours, bridge = compared
    theirs, mine = by_doc(hf["evalkit_ppl"]), by_doc(ours["samples"]["evalkit_ppl"])
    assert sorted(theirs) == sorted(mine) == list(range(len(mine))) and len(mine) >= 3
    tokens = [len(bridge.backend.tokenizer.encode(s["doc"]["text"], bos=False)) for s in mine.values()]
    assert min(tokens) > MAX_LENGTH and max(tokens) > 3 * MAX_LENGTH  # two windows or more, four for one
    for doc_id, sample in mine.items():
        assert sample["resps"][0][0] == pytest.approx(theirs[doc_id]["resps"][0][0], abs=ATOL), doc_id
        assert sample["resps"][0][0] < 0
    # The windows cover each token once: one window of the whole document gives a different total.
    longest = max(mine.values(), key=lambda s: len(s["doc"]["text"]))
    whole = EvalkitLM(model=bridge.backend, max_length=10_000)
    (one_window,) = whole.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (longest["doc"]["text"],), 0)])
    assert abs(one_window - longest["resps"][0][0]) > 1e-3


def test_hf_checkpoints_are_scored_token_by_token_as_lm_eval_hf_scores_them(compared, task_manager):
    """An hf: checkpoint through the bridge: its backend scores tokens in this process, so is_greedy is computed
    and perplexity tasks run, equal to lm-eval's own hf model on the same checkpoint."""
    ckpt, hf, _, _ = compared
    via_hf = EvalkitLM(model=f"hf:{ckpt}", max_length=MAX_LENGTH, device="cpu")
    ours = lm_eval.simple_evaluate(model=via_hf, task_manager=task_manager, log_samples=True, limit=3,
                                   tasks=["evalkit_mc", "evalkit_ppl"])["samples"]
    theirs, mine = by_doc(hf["evalkit_mc"]), by_doc(ours["evalkit_mc"])
    assert sorted(mine) == [0, 1, 2]
    for doc_id, sample in mine.items():
        got, expected = [r[0] for r in sample["resps"]], [r[0] for r in theirs[doc_id]["resps"]]
        assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in expected], abs=ATOL), doc_id
        assert [g for _, g in got] == [g for _, g in expected], doc_id
    theirs, mine = by_doc(hf["evalkit_ppl"]), by_doc(ours["evalkit_ppl"])
    assert sorted(mine) == [0, 1, 2]
    for doc_id, sample in mine.items():
        assert sample["resps"][0][0] == pytest.approx(theirs[doc_id]["resps"][0][0], abs=ATOL), doc_id


def instances(pairs: list[tuple[str, str]], kind: str = "loglikelihood") -> list[Instance]:
    return [Instance(kind, {}, pair, i, ("direct", i, 1)) for i, pair in enumerate(pairs)]


@pytest.fixture(scope="module")
def mistral_ckpt(tmp_path_factory) -> Path:
    return tiny_mistral(tmp_path_factory.mktemp("mistral"))


@pytest.fixture(scope="module")
def bridge(mistral_ckpt) -> EvalkitLM:
    return EvalkitLM(model=str(mistral_ckpt), device="cpu")


def test_repeats_draw_evalkit_per_sample_seeds(bridge, task_manager):
    ours = lm_eval.simple_evaluate(model=bridge, task_manager=task_manager, log_samples=True,
                                   tasks=["evalkit_gen_sampled"], limit=2)
    samples = by_doc(ours["samples"]["evalkit_gen_sampled"])
    assert sorted(samples) == [0, 1]
    for sample in samples.values():
        drawn = sample["resps"][0]
        assert len(drawn) == 3 and len(set(drawn)) == 3, drawn  # three repeats, three different samples
    # Sample k of document d is evalkit's sample k of problem "evalkit_gen_sampled/d", seeded by
    # sample_seed(1234, that id, k): the backend asked directly for those samples draws the same texts.
    requests = [GenerationRequest(f"evalkit_gen_sampled/{d}", s["arguments"][0][0], ("\n", "Q:"), 12,
                                  sample_indices=(0, 1, 2)) for d, s in sorted(samples.items())]
    direct = bridge.backend.generate(requests, SamplingParams(n=3, temperature=0.9, top_p=0.95, seed=1234))
    assert [[c.text for c in doc] for doc in direct] == [samples[d]["resps"][0] for d in sorted(samples)]
    reseeded = bridge.backend.generate(requests, SamplingParams(n=3, temperature=0.9, top_p=0.95, seed=99))
    assert [[c.text for c in doc] for doc in reseeded] != [samples[d]["resps"][0] for d in sorted(samples)]


@pytest.fixture(scope="module")
def greedy_pairs(bridge) -> list[tuple[str, str]]:
    """(context, continuation) pairs where the continuation is what greedy decoding writes, and others."""
    contexts = ["The answer is", "def f(x):\n    return", "Paris is the capital of", "1, 2, 3,"]
    greedy = bridge.backend.generate([GenerationRequest(f"c{i}", c, max_tokens=2) for i, c in enumerate(contexts)],
                                     SamplingParams())
    pairs = [(c, g[0].text) for c, g in zip(contexts, greedy, strict=True)]
    return pairs + [(c, " zebra crossing") for c in contexts] + [("", " hello world"), ("", "Hello")]


def test_loglikelihood_is_greedy_and_empty_context_equal_hf(bridge, mistral_ckpt, greedy_pairs):
    from lm_eval.models.huggingface import HFLM

    hf = HFLM(pretrained=str(mistral_ckpt), dtype="float32", device="cpu", batch_size=4)
    expected = hf.loglikelihood(instances(greedy_pairs))
    got = bridge.loglikelihood(instances(greedy_pairs))
    assert [g for _, g in got] == [g for _, g in expected]
    assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in expected], abs=ATOL)
    assert sum(g for _, g in got[:4]) >= 2  # greedy continuations are recognised (a re-encoding may differ)
    assert not any(g for _, g in got[4:8])  # " zebra crossing" is not what a random model writes
    assert all(lp < 0 for lp, _ in got)


def test_hf_is_greedy_comes_from_its_token_scores(bridge, mistral_ckpt, greedy_pairs, monkeypatch):
    via_hf = EvalkitLM(model=f"hf:{mistral_ckpt}", device="cpu")

    def no_generation(*args, **kwargs):
        raise AssertionError("is_greedy of a token scorer needs no generation")

    monkeypatch.setattr(via_hf.backend, "generate", no_generation)
    got = via_hf.loglikelihood(instances(greedy_pairs))
    expected = bridge.loglikelihood(instances(greedy_pairs))  # native, equal to lm-eval's hf (above)
    assert [g for _, g in got] == [g for _, g in expected] and sum(g for _, g in got[:4]) >= 2
    assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in expected], abs=ATOL)


def test_a_server_gives_is_greedy_through_its_top_logprobs(bridge, mistral_ckpt, greedy_pairs):
    """openai: to `evalkit serve` of the same checkpoint: is_greedy comes from the echoed top log-probabilities,
    without a generation; a server that leaves them out gets the generation's answer. Both equal the native
    bridge."""
    from fault_proxy import FaultProxy

    from evalkit.serve import build_engine, serving

    expected = bridge.loglikelihood(instances(greedy_pairs))
    engine = build_engine(str(mistral_ckpt), backend_options={"dtype": "float32", "device": "cpu"}, name="tiny")
    try:
        with serving(engine) as url, FaultProxy(url.removesuffix("/v1")) as proxy:
            via_server = EvalkitLM(model=f"openai:{proxy.url}/v1")
            got = via_server.loglikelihood(instances(greedy_pairs))
            generations = [body for path, body, _ in proxy.forwarded
                           if path == "/v1/completions" and not body.get("echo")]
            assert [g for _, g in got] == [g for _, g in expected] and sum(g for _, g in got[:4]) >= 2
            assert [lp for lp, _ in got] == pytest.approx([lp for lp, _ in expected], abs=ATOL)
            assert generations == []

            def without_tops(path: str, body: dict) -> dict:
                for choice in body.get("choices") or []:
                    if isinstance(choice.get("logprobs"), dict):
                        choice["logprobs"]["top_logprobs"] = None
                return body

            proxy.rewrite = without_tops
            proxy.forwarded.clear()
            fallback = via_server.loglikelihood(instances(greedy_pairs))
            assert [g for _, g in fallback] == [g for _, g in got]
            assert [lp for lp, _ in fallback] == pytest.approx([lp for lp, _ in got], abs=ATOL)
            assert any(not body.get("echo") for path, body, _ in proxy.forwarded if path == "/v1/completions")
    finally:
        engine.close()


class TextOnly(Backend):
    """The native backend seen only through the Backend interface, as the openai: and hf: backends are."""

    name = "text-only"

    def __init__(self, inner: Backend) -> None:
        self.inner = inner

    def generate(self, requests, sampling):
        return self.inner.generate(requests, sampling)

    def loglikelihood(self, requests):
        return self.inner.loglikelihood(requests)


def test_any_backend_through_the_backend_interface(bridge, greedy_pairs):
    generic = EvalkitLM(model=TextOnly(bridge.backend))
    token_level = bridge.loglikelihood(instances(greedy_pairs))
    text_level = generic.loglikelihood(instances(greedy_pairs))
    assert [lp for lp, _ in text_level] == pytest.approx([lp for lp, _ in token_level], abs=ATOL)
    assert [g for _, g in text_level] == [g for _, g in token_level]
    gen = instances([("Q: What is 2 + 3?\nA:", {"until": ["\n"], "max_gen_toks": 8, "do_sample": False})],
                    "generate_until")
    assert generic.generate_until(gen) == bridge.generate_until(gen)
    with pytest.raises(LmEvalError, match="loglikelihood_rolling .* text-only backend"):
        generic.loglikelihood_rolling(instances([("some text",)], "loglikelihood_rolling"))


class Recorder(Backend):
    """Records what the bridge asks for and answers every sample with a text that contains a stop string."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[list[GenerationRequest], SamplingParams]] = []

    def generate(self, requests, sampling):
        self.calls.append((list(requests), sampling))
        return [[Completion(f" sample {i} of {r.task_id}\nmore") for i in r.sample_indices] for r in requests]


def test_generation_settings_reach_the_backend():
    backend = Recorder()
    lm = EvalkitLM(model=backend, seed=7, max_gen_toks=33)
    sampled = {"until": ["\n"], "max_gen_toks": 5, "do_sample": True, "temperature": 0.7, "top_p": 0.9}
    greedy = {"until": "STOP", "do_sample": False, "temperature": 0.7}
    reqs = [Instance("generate_until", {}, ("ctx A", sampled), 0, ("task", 0, 3))] * 3 + [
        Instance("generate_until", {}, ("ctx B", greedy), 0, ("task", 1, 1)),
        Instance("generate_until", {}, ("ctx C", {"do_sample": True}), 0, ("task", 2, 1)),
    ]
    out = lm.generate_until(reqs)
    assert out[:3] == [" sample 0 of task/0", " sample 1 of task/0", " sample 2 of task/0"]  # cut at "\n"
    assert out[3] == " sample 0 of task/1\nmore" and out[4] == " sample 0 of task/2\nmore"
    seen = {r.task_id: (r, s) for requests, s in backend.calls for r in requests}
    request, sampling = seen["task/0"]
    assert request.sample_indices == (0, 1, 2) and request.stop == ("\n",) and request.max_tokens == 5
    assert (sampling.temperature, sampling.top_p, sampling.seed) == (0.7, 0.9, 7)
    request, sampling = seen["task/1"]
    assert request.stop == ("STOP",) and request.max_tokens == 33 and sampling.temperature == 0.0  # do_sample wins
    assert seen["task/2"][1].temperature == 1.0  # sampling without a temperature draws at 1.0, as transformers does
    with pytest.raises(LmEvalError, match="top_k"):
        lm.generate_until([Instance("generate_until", {}, ("x", {"do_sample": True, "top_k": 50}), 0)])
    lm.generate_until([Instance("generate_until", {}, ("x", {"top_k": 0, "num_beams": 1}), 0)])  # no-op values


def test_chat_templates_render_with_the_backends_chat_format(bridge, task_manager):
    """--apply_chat_template: contexts are mistral-common's rendering of the conversation; a generation is the
    backend's own chat generation; a choice's log-likelihood is scored on the ids of the conversation with the
    choice as the assistant's answer."""
    from evalkit.models.generate import score_tokens
    from evalkit.requests import ChatMessage
    from evalkit.sanitize import truncate_at_stop

    ours = lm_eval.simple_evaluate(model=bridge, tasks=["evalkit_gen", "evalkit_mc"], task_manager=task_manager,
                                   apply_chat_template=True, log_samples=True, limit=2)
    chat_format = bridge.backend.chat_format()
    for sample in ours["samples"]["evalkit_gen"]:
        (context, gen_kwargs), = sample["arguments"]
        user = ChatMessage("user", f"Q: {sample['doc']['question']}\nA:")
        assert bridge.chats[context] == ((user,), "")
        assert context == chat_format.render([user]).text and context.startswith("<s>[INST]")
        request = GenerationRequest("x", context, stop=tuple(gen_kwargs["until"]), max_tokens=12, messages=(user,))
        [[expected]] = bridge.backend.generate([request], SamplingParams())
        assert sample["resps"][0][0] == truncate_at_stop(expected.text, request.stop)
    for sample in ours["samples"]["evalkit_mc"]:
        for (context, choice), [[logp, _]] in zip(sample["arguments"], sample["resps"], strict=True):
            messages, prefix = bridge.chats[context]
            head = chat_format.render(messages, prefix).ids
            whole = chat_format.render(messages, prefix + choice).ids
            assert whole[: len(head)] == head  # the answer's tokens follow the conversation's
            [(expected, _)] = score_tokens(bridge.backend.model, head, [whole[len(head):]])
            assert logp == pytest.approx(expected, abs=ATOL)


def test_chat_log_likelihoods_need_a_native_model(task_manager):
    backend = Recorder()
    with pytest.raises(LmEvalError, match="log-likelihoods of chat prompts need token-level scores"):
        lm_eval.simple_evaluate(model=EvalkitLM(model=backend), tasks=["evalkit_mc"], task_manager=task_manager,
                                apply_chat_template=True, limit=1)


def test_mmlu_through_the_bridge_equals_evalkit_scoring(bridge, data_dir, tmp_path):
    """lm-eval's own mmlu_<subject> task, on evalkit's MMLU docs, gives the log-likelihoods that evalkit's mmlu
    task gets from the native backend for the same prompts."""
    import yaml
    from lm_eval.api.task import ConfigurableTask

    from evalkit.data import DataConfig
    from evalkit.tasks import get_task

    task = get_task("mmlu", DataConfig.from_options(str(data_dir)))
    subject = "college_mathematics"
    docs = [d for d in task.docs() if d["subject"] == subject][:3]
    files = {}
    for split, rows in (("test", docs), ("dev", docs[0]["shots"])):
        files[split] = str(tmp_path / f"{split}.jsonl")
        Path(files[split]).write_text("".join(json.dumps({"question": r["question"], "subject": subject,
                                                          "choices": r["choices"], "answer": r["answer"]}) + "\n"
                                              for r in rows), encoding="utf-8")
    folder = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    config = yaml.safe_load((folder / "_default_template_yaml").read_text())
    config |= {k: v for k, v in yaml.safe_load((folder / f"mmlu_{subject}.yaml").read_text()).items()
               if k != "include"}
    config.update(dataset_path="json", dataset_name=None,
                  dataset_kwargs={"data_files": files, "cache_dir": str(tmp_path / "cache")})
    out = lm_eval.simple_evaluate(model=bridge, tasks=[ConfigurableTask(config=config)], num_fewshot=5,
                                  log_samples=True)
    samples = by_doc(out["samples"][f"mmlu_{subject}"])
    assert sorted(samples) == [0, 1, 2]
    requests = [task.request(doc) for doc in docs]
    native = bridge.backend.loglikelihood(requests)
    for doc_id, (doc, request, scores) in enumerate(zip(docs, requests, native, strict=True)):
        sample = samples[doc_id]
        assert sample["arguments"][0][0] == request.context  # the same 5-shot prompt
        assert [r[0][0] for r in sample["resps"]] == pytest.approx(scores, abs=ATOL)
        assert all(math.isfinite(s) for s in scores)
        verdict = task.score(doc, scores)
        assert sample["acc"] == float(verdict.verdict == "passed")


def evalkit_cli(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    """`evalkit ARGUMENTS` in a fresh process: lm-eval's command line configures logging once per process."""
    return subprocess.run([sys.executable, "-m", "evalkit.cli", *arguments], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_cli_runs_lm_eval_with_the_evalkit_model(mistral_ckpt, tmp_path):
    out_dir = tmp_path / "out"
    res = evalkit_cli("lm-eval", "--model_args", f"model={mistral_ckpt},max_length=16", "--include_path",
                      str(TASKS_DIR), "--tasks", "evalkit_mc,evalkit_ppl", "--limit", "2", "--output_path",
                      str(out_dir), "--log_samples", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (results_file,) = out_dir.rglob("results_*.json")
    results = json.loads(results_file.read_text())
    assert results["config"]["model"] == "evalkit"
    assert results["config"]["evalkit"]["max_length"] == 16  # model_args reached the bridge
    assert results["config"]["evalkit"]["backend"]["arch"] == "mistral"
    assert {name: r["sample_len"] for name, r in results["results"].items()} == {"evalkit_mc": 2, "evalkit_ppl": 2}
    assert math.isfinite(results["results"]["evalkit_ppl"]["bits_per_byte,none"])
    assert len(list(out_dir.rglob("samples_evalkit_mc_*.jsonl"))) == 1  # --log_samples passed through


@pytest.mark.parametrize(("arguments", "expected"), [
    (["--model_args", "model={ckpt},bogus=1", "--tasks", "evalkit_mc"], "error: model_args bogus do not apply"),
    (["--model_args", "model={ckpt}", "--tasks", "no_such_task"], "error: lm-eval: Tasks not found: no_such_task"),
])
def test_cli_errors_are_one_line(mistral_ckpt, tmp_path, arguments, expected):
    res = evalkit_cli("lm-eval", "--include_path", str(TASKS_DIR), *(a.format(ckpt=mistral_ckpt) for a in arguments),
                      cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().splitlines()[-1].startswith(expected)
    assert "Traceback" not in res.stderr


def test_cli_help_explains_the_bridge():
    res = CliRunner().invoke(app, ["lm-eval", "--help"])
    assert res.exit_code == 0
    for phrase in ("lm-evaluation-harness", "model=", "codestral-mamba", "lm-eval run --help", "evalkit[lm-eval]"):
        assert phrase in res.output, phrase


def test_lm_eval_argv_passes_options_through():
    assert lm_eval_argv(["--tasks", "hellaswag", "--model_args", "model=x", "--num_fewshot", "5"]) == [
        "lm-eval", "run", "--tasks", "hellaswag", "--model_args", "model=x", "--num_fewshot", "5",
        "--model", "evalkit", "--device", "auto", "--batch_size", "auto"]
    assert lm_eval_argv(["run", "--model=hf", "--device", "cpu", "-b", "4"]) == [
        "lm-eval", "run", "--model=hf", "--device", "cpu", "-b", "4"]
    assert lm_eval_argv(["--config", "c.yaml"]) == ["lm-eval", "run", "--config", "c.yaml", "--model", "evalkit"]
    assert lm_eval_argv(["ls", "tasks"]) == ["lm-eval", "ls", "tasks"]


def test_core_does_not_import_lm_eval_and_names_the_extra():
    script = (
        "import sys\n"
        "import evalkit, evalkit.cli, evalkit.runner, evalkit.backends, evalkit.backends.native\n"
        "assert 'lm_eval' not in sys.modules, 'the core imported lm_eval'\n"
        "sys.modules['lm_eval'] = None  # as if the extra were not installed\n"
        "from evalkit.errors import EvalkitError\n"
        "try:\n"
        "    import evalkit.lm_eval\n"
        "except EvalkitError as e:\n"
        "    print(e)\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "pip install 'evalkit[lm-eval]'" in res.stdout
