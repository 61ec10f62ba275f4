"""The hf: backend on tiny random transformers checkpoints written by the tests (CPU, no network).

Against the native backend (Mamba-2 and sliding-window Mistral with the real v3 tokenizer): the same greedy
completions token for token, and the same log-likelihoods. Against transformers' own `generate` (Llama,
GPT-2, and the two above): the same greedy tokens. Batch size, neighbours and order change nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

import hf_checkpoints  # noqa: E402
from hf_checkpoints import WINDOW  # noqa: E402

from evalkit.backends import BackendError, backend_class, hf_cache, resolve_backend  # noqa: E402
from evalkit.backends.hf import HFBackend, resolve_hf_checkpoint  # noqa: E402
from evalkit.backends.mistral_tokenizers import write_autotokenizer_files  # noqa: E402
from evalkit.backends.native import NativeBackend  # noqa: E402
from evalkit.requests import ChatMessage, GenerationRequest, LoglikelihoodRequest, SamplingParams  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Prompts of 2 to ~40 tokens: shorter and longer than the window, so that stacked rows have different widths.
PROMPTS = [
    "def fib(n):",
    "import numpy as np\n\ndef mean(xs):\n    return",
    "SELECT",
    "for i in range(10):\n    print(i * i)\n\nclass Stack:\n    def __init__(self):\n        self.items = []",
    "The quick brown fox",
    "x = [1, 2, 3]\ny = [a * 2 for a in x]\nprint(sum(y))\n# the total is",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {
        "mistral": hf_checkpoints.tiny_mistral(root / "mistral"),
        "mamba2": hf_checkpoints.tiny_mamba2(root / "mamba2"),
        "llama": hf_checkpoints.tiny_llama(root / "llama"),
        "gpt2": hf_checkpoints.tiny_gpt2(root / "gpt2"),
    }


@pytest.fixture(scope="module")
def backends(checkpoints) -> dict[str, HFBackend]:
    return {arch: HFBackend.from_spec(str(path), dtype="float32", device="cpu", batch_size=8)
            for arch, path in checkpoints.items()}


def requests(max_tokens: int = 24, samples: tuple[int, ...] = (0,), prompts=PROMPTS) -> list[GenerationRequest]:
    return [GenerationRequest(task_id=f"t/{i}", prompt=p, max_tokens=max_tokens, sample_indices=samples)
            for i, p in enumerate(prompts)]


def texts(out) -> list[list[str]]:
    return [[c.text for c in samples] for samples in out]


def with_batch_size(backend: HFBackend, batch_size: int) -> HFBackend:
    return HFBackend(backend.model, backend.tokenizer, spec=backend.spec, path=backend.path, batch_size=batch_size)


def decode_after(tokenizer, prompt_ids: list[int], new_ids: list[int]) -> str:
    """decode(prompt + new) minus decode(prompt), written out independently of the backend."""
    head = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    return tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)[len(head) :]


@torch.no_grad()
def transformers_greedy(backend: HFBackend, prompt: str, max_tokens: int) -> tuple[str, int, str]:
    """(text, new token count, finish) from transformers' own generate, one prompt at a time (no padding)."""
    ids = backend.encode(prompt)
    out = backend.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 max_new_tokens=max_tokens, do_sample=False, eos_token_id=sorted(backend.eos_ids),
                                 pad_token_id=min(backend.eos_ids))
    new = out[0, len(ids) :].tolist()
    stops = [i for i, t in enumerate(new) if t in backend.eos_ids]
    if stops:
        return decode_after(backend.tokenizer, ids, new[: stops[0]]), stops[0], "stop"
    return decode_after(backend.tokenizer, ids, new), len(new), "length"


# ------------------------------------------------------------------------------------------------ loading


def test_mistral_tokenizer_folder_loads_with_autotokenizer(checkpoints, backends):
    from transformers import AutoTokenizer
    from transformers.tokenization_mistral_common import MistralCommonBackend

    tok = AutoTokenizer.from_pretrained(checkpoints["mistral"])
    assert isinstance(tok, MistralCommonBackend)
    assert tok.encode("def fib(n):") == [1, 1569, 16950, 29500, 29479, 2097]  # the native v3 ids, BOS first
    info = backends["mistral"].describe()
    assert info["arch"] == "mistral" and info["dtype"] == "float32" and info["device"] == "cpu"
    assert info["special_tokens_added"] == ["<s>"] and info["eos_token_ids"] == [2]
    assert info["trust_remote_code"] is False and info["model"] == str(checkpoints["mistral"])
    assert "MistralCommonBackend" in info["tokenizer"]
    json.dumps(info)  # recorded in results.json


def test_options_are_declared_and_checked(checkpoints):
    assert {"revision", "trust_remote_code", "tokenizer", "dtype", "device", "batch_size"} <= HFBackend.options
    with pytest.raises(BackendError, match="--revision does not apply"):
        resolve_backend(str(checkpoints["mamba2"]), revision="main")
    with pytest.raises(BackendError, match="--revision applies to hub ids"):
        resolve_backend(f"hf:{checkpoints['mamba2']}", revision="main")
    with pytest.raises(BackendError, match="unknown dtype"):
        resolve_backend(f"hf:{checkpoints['mamba2']}", dtype="float8")
    with pytest.raises(BackendError, match="true or false"):  # e.g. "False" from a config file: never trusted
        resolve_backend(f"hf:{checkpoints['mamba2']}", trust_remote_code="False")


def test_missing_folder_or_hub_id_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(BackendError, match="no such checkpoint folder"):
        resolve_backend(f"hf:{tmp_path / 'nope'}")
    with pytest.raises(BackendError, match=r"hf download some-org/some-model --local-dir") as e:
        resolve_backend("hf:some-org/some-model")
    assert "HF_HUB_OFFLINE" in str(e.value) and "--model hf:./checkpoints/some-model" in str(e.value)


def write_hub_cache(cache: Path, repo: str, source: Path) -> str:
    """Lay `source` out as a cached hub snapshot of `repo` (refs/main -> snapshots/COMMIT), as hf download does."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)
    (repo_dir / "snapshots").mkdir()
    shutil.copytree(source, repo_dir / "snapshots" / commit)
    return commit


def test_hub_id_resolves_through_the_local_cache(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    commit = write_hub_cache(tmp_path, "tiny-org/tiny-mamba", checkpoints["mamba2"])
    path = resolve_hf_checkpoint("tiny-org/tiny-mamba")
    assert path.name == commit and (path / "config.json").is_file()
    backend = resolve_backend("hf:tiny-org/tiny-mamba", dtype="float32", device="cpu")
    assert backend.describe()["model"] == "tiny-org/tiny-mamba" and Path(backend.describe()["path"]).name == commit
    pinned = resolve_backend("hf:tiny-org/tiny-mamba", revision=commit, dtype="float32", device="cpu")
    assert pinned.describe()["model"] == f"tiny-org/tiny-mamba@{commit}"
    with pytest.raises(BackendError, match="--revision v2"):
        resolve_hf_checkpoint("tiny-org/tiny-mamba", revision="v2")  # not cached


def test_remote_code_does_not_run_unless_trusted(tmp_path):
    """A checkpoint whose config points at its own modeling file: refused, and the file never imported."""
    ckpt = tmp_path / "remote"
    ckpt.mkdir()
    marker = tmp_path / "code-ran"
    (ckpt / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (ckpt / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilForCausalLM"],
        "auto_map": {"AutoConfig": "modeling_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"},
    }))
    write_autotokenizer_files(ckpt)
    with pytest.raises(BackendError, match="--trust-remote-code"):
        resolve_backend(f"hf:{ckpt}", device="cpu")
    assert not marker.exists()


def test_missing_transformers_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    monkeypatch.delitem(sys.modules, "evalkit.backends.hf")
    with pytest.raises(BackendError, match=r"pip install 'evalkit\[hf\]'"):
        backend_class("hf:anything")


# ------------------------------------------------------------------------------------------------ tokenizers


@pytest.mark.parametrize("arch", ["mistral", "llama"])
def test_continuation_keeps_the_leading_space_of_its_indentation(arch, backends):
    """SentencePiece (mistral-common v3, and v1 converted to a transformers LlamaTokenizer): the new tokens
    decoded alone lose one of the four spaces; decoded after the prompt they keep them."""
    backend = backends[arch]
    prompt = backend.encode("def f(x):\n")
    whole = backend.encode("def f(x):\n    return x + 1\n")
    assert whole[: len(prompt)] == prompt
    new = whole[len(prompt) :]
    assert backend.tokenizer.decode(new, skip_special_tokens=True) == "   return x + 1\n"  # the trap is real
    assert backend.decode_continuation(prompt, new) == "    return x + 1\n"
    long_prompt = backend.encode("# " + "word " * 40 + "\ndef f(x):\n")  # the anchor path: a prompt > 8 tokens
    long_whole = backend.encode("# " + "word " * 40 + "\ndef f(x):\n    return x + 1\n")
    assert backend.decode_continuation(long_prompt, long_whole[len(long_prompt) :]) == "    return x + 1\n"


def test_a_character_split_across_prompt_and_completion(backends):
    """Byte-level BPE: a prompt whose last token is half of "é" (ids made by hand, never by encoding text);
    the completion holds the character the new token completes."""
    backend = backends["gpt2"]
    ids = backend.encode("café")
    assert backend.decode(ids[:-1]).endswith("\ufffd")  # the prompt's text ends in half a character
    assert backend.decode_continuation(ids[:-1], ids[-1:]) == "é"


def test_generated_indentation_survives_end_to_end(tmp_path):
    """A bigram Llama that, after "def f(x):\\n", says the tokens of "    return x + 1" and then EOS."""
    ckpt = tmp_path / "bigram"
    ckpt.mkdir()
    tokenizer = hf_checkpoints.sentencepiece_tokenizer(ckpt)
    prompt = tokenizer.encode("def f(x):\n")
    new = tokenizer.encode("def f(x):\n    return x + 1")[len(prompt) :]
    hf_checkpoints.bigram_llama(ckpt, [prompt[-1], *new, tokenizer.eos_token_id])
    backend = HFBackend.from_spec(str(ckpt), dtype="float32", device="cpu")
    [[completion]] = backend.generate([GenerationRequest("f", "def f(x):\n", max_tokens=20)], SamplingParams())
    assert completion.text == "    return x + 1"
    assert completion.finish_reason == "stop" and completion.info["completion_tokens"] == len(new)


def test_tokenizer_option(checkpoints, tmp_path):
    mamba = checkpoints["mamba2"]
    # hf: a shipped mistral-common version, a tokenizer file, or another checkpoint's folder
    v3_file = mamba / hf_checkpoints.shipped_file("v3").name
    for name, source in [("v3", "mistral-common"), (str(v3_file), "mistral-common"),
                         (str(checkpoints["mistral"]), str(checkpoints["mistral"]))]:
        backend = resolve_backend(f"hf:{mamba}", tokenizer=name, dtype="float32", device="cpu")
        assert backend.encode("def fib(n):") == [1, 1569, 16950, 29500, 29479, 2097]
        assert source in backend.describe()["tokenizer"]
    with pytest.raises(BackendError, match="cannot load a tokenizer"):
        resolve_backend(f"hf:{mamba}", tokenizer=str(tmp_path), device="cpu")  # an empty folder
    with pytest.raises(BackendError, match="more than the 320 embeddings"):
        resolve_backend(f"hf:{checkpoints['gpt2']}", tokenizer="v3", device="cpu")
    # native: v1/v3 by name, any shipped version, a file or a folder holding one
    native = resolve_backend(str(mamba), tokenizer=str(mamba), dtype="float32", device="cpu")
    assert native.tokenizer.encode("def fib(n):") == [1, 1569, 16950, 29500, 29479, 2097]
    assert native.describe()["tokenizer"].startswith("mistral-common mistral_instruct_tokenizer_240323.model.v3")
    default = resolve_backend(str(mamba), dtype="float32", device="cpu")
    [got], [want] = (b.generate(chat_requests(4)[:1], SamplingParams()) for b in (native, default))
    assert got[0].info["prompt_ids_sha256"] == want[0].info["prompt_ids_sha256"]  # the file's instruct encoding
    assert resolve_backend(str(mamba), tokenizer="v1", device="cpu").tokenizer.vocab_size == 32000
    with pytest.raises(BackendError, match="not a Mistral tokenizer"):
        resolve_backend(str(mamba), tokenizer=str(tmp_path), device="cpu")
    assert resolve_backend(str(mamba), tokenizer="v7", device="cpu").tokenizer.version.endswith(".model.v7")
    with pytest.raises(BackendError, match="131072 tokens, more than the 32768"):
        resolve_backend(str(mamba), tokenizer="v3-tekken", device="cpu")


# ------------------------------------------------------------------------------------------------ generation


@pytest.mark.parametrize("arch", ["mamba2", "mistral"])
def test_greedy_completions_equal_the_native_backend(arch, checkpoints, backends):
    native = NativeBackend.from_spec(str(checkpoints[arch]), dtype="float32", device="cpu", batch_size=8)
    reqs = requests(max_tokens=40)
    got = backends[arch].generate(reqs, SamplingParams())
    want = native.generate(reqs, SamplingParams())
    assert texts(got) == texts(want)
    for g, w in zip(got, want, strict=True):
        assert g[0].info["completion_tokens"] == w[0].info["completion_tokens"] > 3
        assert g[0].info["prompt_tokens"] == w[0].info["prompt_tokens"]
    if arch == "mistral":  # the prompts and completions cross the window
        assert max(g[0].info["prompt_tokens"] for g in got) > WINDOW


@pytest.mark.parametrize("arch", ["llama", "gpt2", "mistral", "mamba2"])
def test_greedy_completions_equal_transformers_generate(arch, backends):
    backend = backends[arch]
    got = backend.generate(requests(max_tokens=30), SamplingParams())
    for prompt, [completion] in zip(PROMPTS, got, strict=True):
        text, n, finish = transformers_greedy(backend, prompt, 30)
        assert (completion.text, completion.info["completion_tokens"], completion.finish_reason) == (text, n, finish)
    assert len({c[0].text for c in got}) == len(PROMPTS)  # non-degenerate continuations


def decode_rows(backend: HFBackend) -> tuple[list[int], object]:
    """Spy on the model: the number of rows of every one-token (decoding) forward pass."""
    rows: list[int] = []

    def hook(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids.shape[1] == 1:
            rows.append(ids.shape[0])

    return rows, backend.model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "mistral", "mamba2"])
def test_batch_size_changes_no_output(arch, backends):
    """Greedy and sampled outputs with batch 1 and batch 8 (rows of different prompts really decode together).

    Logits of one row computed in batches of 1 and of 8 differ by float rounding (~1e-6, matrix products of
    other shapes), so a sampled token can change only where the uniform draw falls within ~1e-6 of a
    boundary of the cumulative distribution. Temperature 0.3 gives these random models the peaked
    distributions of a trained one (largest probability ~0.25); at 1.0 they are nearly flat over 32768 tokens
    and about 1 draw in 200 sits on such a boundary.
    """
    backend = backends[arch]
    greedy = requests(max_tokens=24, samples=(0, 1))
    sampled = requests(max_tokens=16, samples=(0, 1, 2))
    sampling = SamplingParams(n=3, temperature=0.3, top_p=0.9, seed=7)
    rows, handle = decode_rows(backend)
    try:
        batched = (texts(backend.generate(greedy, SamplingParams(n=2))), texts(backend.generate(sampled, sampling)))
    finally:
        handle.remove()
    assert max(rows) == 8
    one = with_batch_size(backend, 1)
    assert (texts(one.generate(greedy, SamplingParams(n=2))), texts(one.generate(sampled, sampling))) == batched
    assert all(len(set(s)) > 1 for s in batched[1])  # the samples of a prompt differ
    # neighbours, order and the sample indices asked for do not matter either
    assert texts(backend.generate(sampled[::-1], sampling)) == batched[1][::-1]
    assert texts(backend.generate([replace(sampled[3], sample_indices=(2, 0))], sampling)) == [
        [batched[1][3][2], batched[1][3][0]]]
    reseeded = texts(backend.generate(sampled, replace(sampling, seed=8)))
    assert reseeded != batched[1]


def test_caches_that_cannot_be_stacked_decode_one_prompt_at_a_time(backends, monkeypatch):
    backend = backends["mistral"]
    reqs = requests(max_tokens=12, samples=(0, 1, 2))
    sampling = SamplingParams(n=3, temperature=0.3, top_p=0.9, seed=3)
    stacked = texts(backend.generate(reqs, sampling))
    monkeypatch.setattr(hf_cache, "STACKABLE_LAYERS", frozenset())
    rows, handle = decode_rows(backend)
    try:
        alone = texts(backend.generate(reqs, sampling))
    finally:
        handle.remove()
    assert alone == stacked
    assert max(rows) == 3  # the three samples of one prompt, never two prompts


def test_stop_sequences_end_only_their_row(backends):
    backend = backends["llama"]
    [[full]] = backend.generate(requests(max_tokens=30, prompts=PROMPTS[:1]), SamplingParams())
    assert full.finish_reason == "length", "pick a prompt whose greedy completion runs to max_tokens"
    stop = full.text[len(full.text) // 2 :][:3]
    assert stop.strip(), f"pick a visible stop string from {full.text!r}"
    reqs = [GenerationRequest("a", PROMPTS[0], stop=("<never>", stop), max_tokens=30),
            GenerationRequest("b", PROMPTS[0], max_tokens=30)]
    [cut], [uncut] = backend.generate(reqs, SamplingParams())
    assert cut.text == full.text[: full.text.index(stop)] and cut.finish_reason == "stop"
    assert cut.info["completion_tokens"] < full.info["completion_tokens"]  # it stopped generating early
    assert uncut.text == full.text and uncut.finish_reason == "length" and uncut.info["completion_tokens"] == 30


def test_generation_stops_at_the_models_context(backends):
    """GPT-2's learned positions end at n_positions (256 here): the completion is cut there, and says so."""
    backend = backends["gpt2"]
    prompt = "x = 1\n" * 50
    n = len(backend.encode(prompt))
    assert 240 < n < 256
    [[cut]], [[over]] = (backend.generate([GenerationRequest("long", p, max_tokens=30)], SamplingParams())
                         for p in (prompt, prompt * 2))
    assert cut.info["completion_tokens"] <= 256 - n and cut.info["context_limit"] == 256
    assert (over.text, over.info["completion_tokens"], over.info["context_limit"]) == ("", 0, 256)
    with pytest.raises(BackendError, match="exceed the model's 256 positions"):
        backend.loglikelihood([LoglikelihoodRequest("long", prompt, (" y" * 20,))])


def test_zero_max_tokens(backends):
    [[c]] = backends["gpt2"].generate([GenerationRequest("z", "x", max_tokens=0)], SamplingParams())
    assert (c.text, c.finish_reason, c.info["completion_tokens"]) == ("", "length", 0)


CHAT = (ChatMessage("system", "Answer with code only."), ChatMessage("user", "Write add(a, b)."),
        ChatMessage("assistant", "def add(a, b):\n    return a + b"), ChatMessage("user", "Write mul(a, b)."))
PREFIX = "```python\n"


def chat_requests(max_tokens: int = 24) -> list[GenerationRequest]:
    return [GenerationRequest("chat/0", "(rendered by the backend)", messages=CHAT, response_prefix=PREFIX,
                              max_tokens=max_tokens),
            GenerationRequest("chat/1", "(rendered by the backend)", messages=CHAT[1:2], max_tokens=max_tokens)]


@pytest.mark.parametrize("arch", ["mamba2", "mistral"])
def test_chat_completions_equal_the_native_backend(arch, checkpoints, backends):
    """A mistral-common tokenizer renders chat with mistral-common's instruct encoding on both backends."""
    native = NativeBackend.from_spec(str(checkpoints[arch]), dtype="float32", device="cpu")
    got = backends[arch].generate(chat_requests(), SamplingParams())
    want = native.generate(chat_requests(), SamplingParams())
    assert texts(got) == texts(want)
    for g, w in zip(got, want, strict=True):
        for key in ("prompt_tokens", "prompt_ids_sha256", "rendered_prompt", "completion_tokens"):
            assert g[0].info[key] == w[0].info[key]
    assert "[INST]" in got[0][0].info["rendered_prompt"]
    assert backends[arch].describe()["chat_format"] == native.describe()["chat_format"]


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def test_chat_prompts_use_the_checkpoint_chat_template(checkpoints, tmp_path):
    from transformers import AutoTokenizer

    ckpt = shutil.copytree(checkpoints["gpt2"], tmp_path / "chat")
    tok = AutoTokenizer.from_pretrained(ckpt)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(ckpt)
    backend = HFBackend.from_spec(str(ckpt), dtype="float32", device="cpu")
    [with_prefix], [plain] = backend.generate(chat_requests(), SamplingParams())
    rendered = with_prefix.info["rendered_prompt"]
    assert rendered.startswith("<|system|>\nAnswer with code only.<|end|>\n<|user|>\nWrite add(a, b).")
    assert rendered.endswith("<|user|>\nWrite mul(a, b).<|end|>\n<|assistant|>\n```python\n")
    assert plain.info["rendered_prompt"] == "<|user|>\nWrite add(a, b).<|end|>\n<|assistant|>\n"
    for completion in (with_prefix, plain):
        ids = tok.encode(completion.info["rendered_prompt"], add_special_tokens=False)
        assert completion.info["prompt_tokens"] == len(ids)
        with torch.no_grad():
            out = backend.model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False,
                                         pad_token_id=tok.eos_token_id)[0, len(ids) :].tolist()
        new = out[: out.index(tok.eos_token_id)] if tok.eos_token_id in out else out
        assert completion.text == decode_after(tok, ids, new)  # what follows the response prefix
    assert backend.describe()["chat_format"]["template_sha256"]


def test_chat_without_a_chat_template_is_a_clear_error(backends):
    assert backends["llama"].describe()["chat_format"] is None
    with pytest.raises(BackendError, match="has no chat template"):
        backends["llama"].generate(chat_requests(), SamplingParams())


# ------------------------------------------------------------------------------------------------ log-likelihood


LL_REQUESTS = [
    LoglikelihoodRequest("a", "The answer is ", (" 42", "yes", "a longer continuation here", "")),
    LoglikelihoodRequest("b", "def add(a, b):\n    return", (" a + b", " a - b\n")),
    LoglikelihoodRequest("c", "", ("hello", "x")),
    LoglikelihoodRequest("d", "x =", ("", " 1")),
]


@pytest.mark.parametrize("arch", ["mamba2", "mistral"])
def test_loglikelihoods_equal_the_native_backend(arch, checkpoints, backends):
    native = NativeBackend.from_spec(str(checkpoints[arch]), dtype="float32", device="cpu")
    got = backends[arch].loglikelihood(LL_REQUESTS)
    want = native.loglikelihood(LL_REQUESTS)
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=1e-4)
    assert got[0][0] < -1.0 and got[0][3] < -1.0  # "": the context's trailing space is scored
    assert got[3][0] == 0.0  # nothing to score


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@torch.no_grad()
def test_loglikelihoods_equal_a_plain_forward(arch, backends):
    """One continuation at a time, unpadded, summed by hand in float64: the batched scores agree."""
    backend = backends[arch]
    tok = backend.tokenizer
    for request, scores in zip(LL_REQUESTS, backend.loglikelihood(LL_REQUESTS), strict=True):
        for continuation, score in zip(request.continuations, scores, strict=True):
            context = request.context.rstrip()  # its trailing spaces belong to the continuation
            cont = backend.encode(request.context + continuation)[len(backend.encode(context)) :]
            context_ids = backend.encode(context) or [tok.bos_token_id if tok.bos_token_id is not None
                                                       else tok.eos_token_id]
            whole = context_ids + cont
            logits = backend.model(torch.tensor([whole])).logits[0].double()
            logp = torch.log_softmax(logits, -1)[len(context_ids) - 1 : -1]
            want = float(logp.gather(-1, torch.tensor(cont)[:, None]).sum()) if cont else 0.0
            assert score == pytest.approx(want, abs=1e-4)


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.docker
@pytest.mark.parametrize("mode", ["--no-chat", "--chat"])
def test_evalkit_run_humaneval_with_a_hub_id(mode, checkpoints, tmp_path, sandbox):
    """`evalkit run --model hf:ORG/NAME --tasks humaneval --limit 2` from the hub cache, judged by the sandbox;
    with --chat the prompts go through the checkpoint's chat format (here mistral-common's v3 encoding)."""
    commit = write_hub_cache(tmp_path / "hub", "tiny-org/tiny-mistral", checkpoints["mistral"])
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "evalkit.cli", "run", "--model", "hf:tiny-org/tiny-mistral", "--tasks", "humaneval",
         "--limit", "2", "--max-tokens", "24", "--dtype", "float32", "--device", "cpu", "--batch-size", "2", mode,
         "--output-path", str(tmp_path / "runs"), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = next((tmp_path / "runs").iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    backend = results["config"]["backend"]
    assert (backend["name"], Path(backend["path"]).name, backend["dtype"]) == ("hf", commit, "float32")
    assert backend["arch"] == "mistral" and backend["batch_size"] == 2
    assert backend["chat_format"]["format"] == "mistral-common v3"
    assert results["tasks"]["humaneval"]["n"] == 2
    assert results["config"]["tasks"]["humaneval"]["options"]["chat"] is (mode == "--chat")
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2
    assert all(s["verdict"] in ("passed", "failed", "timeout") for s in samples)  # judged, not an error
    assert all(s["completion"] for s in samples)
    rendered = [s["generation"].get("rendered_prompt", "") for s in samples]
    assert all(r.startswith("<s>[INST]") for r in rendered) if mode == "--chat" else not any(rendered)
