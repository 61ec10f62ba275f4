"""The native backend on a tiny random Mamba-2 checkpoint with the real v3 tokenizer."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from mamba2_checkpoints import oracle, save_hf

from evalkit.backends.base import BackendError
from evalkit.backends.native import NativeBackend, encode_pair
from evalkit.models.generate import GenerationJob, generate, generate_batch
from evalkit.models.tokenizer import MistralTokenizer, tokenizer_for_vocab
from evalkit.requests import GenerationRequest, LoglikelihoodRequest, SamplingParams

PROMPTS = ["def fib(n):", "import numpy as np\n\ndef mean(xs):\n    return", "SELECT name FROM"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory):
    return save_hf(oracle(seed=5), tmp_path_factory.mktemp("native") / "ckpt")


@pytest.fixture(scope="module")
def backend(checkpoint_dir):
    return NativeBackend.from_spec(str(checkpoint_dir), dtype="float32", device="cpu", batch_size=4)


def greedy_text(backend: NativeBackend, prompt: str, max_tokens: int) -> str:
    """Greedy continuation through the plain generate() path, decoded independently of the backend."""
    tok = backend.tokenizer
    prompt_ids = tok.encode(prompt)
    out = generate(backend.model, torch.tensor(prompt_ids), max_tokens, eos_id=tok.eos_id)[len(prompt_ids) :]
    new = out.tolist()
    new = new[: new.index(tok.eos_id)] if tok.eos_id in new else new
    return tok.decode_continuation(prompt_ids, new)


def test_tokenizer_v3_and_v1():
    v3 = tokenizer_for_vocab(32768)
    assert v3.encode("def fib(n):") == [1, 1569, 16950, 29500, 29479, 2097]
    assert (v3.bos_id, v3.eos_id, v3.vocab_size, v3.version) == (1, 2, 32768, "v3")
    assert v3.decode(v3.encode("def fib(n):")) == "def fib(n):"
    v1 = tokenizer_for_vocab(32000)
    assert (v1.vocab_size, v1.bos_id, v1.eos_id, v1.version) == (32000, 1, 2, "v1")
    with pytest.raises(ValueError, match="no known Mistral tokenizer"):
        tokenizer_for_vocab(50277)


def test_continuation_keeps_its_leading_space():
    tok = MistralTokenizer("v3")
    prompt = tok.encode("def f():\n    return")
    whole = tok.encode("def f():\n    return x + 1  # ✓")
    assert whole[: len(prompt)] == prompt
    assert tok.decode(whole[len(prompt) :]) == "x + 1  # ✓"  # what naive decoding loses
    assert tok.decode_continuation(prompt, whole[len(prompt) :]) == " x + 1  # ✓"


def texts(out: list[list]) -> list[list[str]]:
    return [[c.text for c in samples] for samples in out]


def test_greedy_generation_matches_plain_generate(backend):
    requests = [GenerationRequest(task_id=f"t{i}", prompt=p, max_tokens=12, sample_indices=(0, 1))
                for i, p in enumerate(PROMPTS)]
    out = texts(backend.generate(requests, SamplingParams(n=2)))
    for request, texts_ in zip(requests, out, strict=True):
        expected = greedy_text(backend, request.prompt, 12)
        assert texts_ == [expected, expected]  # greedy: the n samples are the same sequence
        assert len(backend.tokenizer.encode(texts_[0], bos=False)) > 3


def test_stop_sequences_cut_and_end_generation(backend):
    full = greedy_text(backend, PROMPTS[0], 30)
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip(), f"pick a visible stop string from {full!r}"
    expected = full[: full.index(stop)]
    request = GenerationRequest(task_id="s", prompt=PROMPTS[0], stop=("<never>", stop), max_tokens=30)
    [[completion]] = backend.generate([request], SamplingParams())
    assert completion.text == expected and completion.finish_reason == "stop"

    tok = backend.tokenizer
    job = GenerationJob(prompt_ids=tok.encode(PROMPTS[0]), max_new_tokens=30, seeds=[0], stop=(stop,))
    [[completion]] = generate_batch(backend.model, [job], tok.decode_continuation, tok.eos_id)
    assert completion.finish == "stop"
    assert len(completion.ids) < len(tok.encode(full, bos=False))  # it stopped generating early


def test_sequences_leave_the_batch_without_changing_results(backend):
    tok = backend.tokenizer
    lengths = [2, 9, 5, 1, 7]
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(lengths))]
    jobs = [GenerationJob(tok.encode(p), n, seeds=[0]) for p, n in zip(prompts, lengths, strict=True)]
    model = backend.model
    step_rows = []

    def spy(input_ids, cache, last_only=False):
        if input_ids.shape[1] == 1:
            step_rows.append(input_ids.shape[0])
        return type(model).forward_cached(model, input_ids, cache, last_only)

    model.forward_cached = spy
    try:
        results = generate_batch(model, jobs, tok.decode_continuation, tok.eos_id, batch_size=2)
    finally:
        del model.forward_cached
    for prompt, n, [completion] in zip(prompts, lengths, results, strict=True):
        assert completion.finish == "length" and len(completion.ids) == n
        assert completion.text == greedy_text(backend, prompt, n)
    # The first token of each comes from its prefill; every other token costs one row in one step, and a
    # finished sequence frees its row at once: no wasted rows, never more than batch_size per step.
    assert sum(step_rows) == sum(n - 1 for n in lengths)
    assert max(step_rows) == 2


def test_sampling_is_seeded_per_sample_whatever_the_batching(backend, checkpoint_dir):
    requests = [
        GenerationRequest(task_id=f"task/{i}", prompt=p, max_tokens=6 + 3 * i, sample_indices=(0, 1, 2))
        for i, p in enumerate(PROMPTS)
    ]
    # Temperature 0.3 makes the tiny random model's next-token distribution about as peaked as a trained model's
    # (top probability ~0.25). At 1.0 it is nearly flat over 32768 tokens, and the ~3e-6 by which CPU logits differ
    # between batch sizes (the BLAS picks kernels by row count) can move a draw across a bucket boundary.
    sampling = SamplingParams(n=3, temperature=0.3, top_p=0.95, seed=11)
    batched = texts(backend.generate(requests, sampling))
    assert [len(samples) for samples in batched] == [3, 3, 3]
    assert all(len(set(samples)) > 1 for samples in batched)  # different samples per prompt

    one_at_a_time = NativeBackend(
        backend.model,
        backend.tokenizer,
        spec=backend.spec,
        path=backend.path,
        arch=backend.arch,
        batch_size=1,
    )
    assert texts(one_at_a_time.generate(requests, sampling)) == batched
    assert texts(backend.generate(requests[::-1], sampling)) == batched[::-1]  # order and neighbours don't matter
    assert texts(backend.generate([requests[1]], sampling)) == [batched[1]]
    # a request for some sample indices draws exactly those samples
    assert texts(backend.generate([replace(requests[1], sample_indices=(2, 0))], sampling)) == [
        [batched[1][2], batched[1][0]]]
    reseeded = texts(backend.generate(requests, SamplingParams(n=3, temperature=0.3, top_p=0.95, seed=12)))
    assert reseeded != batched


def test_loglikelihood_matches_the_models_logits(backend):
    tok = backend.tokenizer
    requests = [
        # The trailing space moves into the continuations, so even "" scores a space token.
        LoglikelihoodRequest(
            task_id="a", context="def add(a, b):\n    return ", continuations=("a + b", "a - b", "")
        ),
        LoglikelihoodRequest(task_id="b", context="x =", continuations=(" 1", "", " [1, 2, 3]")),
    ]
    results = backend.loglikelihood(requests)
    assert [len(r) for r in results] == [3, 3]
    for request, scores in zip(requests, results, strict=True):
        for continuation, score in zip(request.continuations, scores, strict=True):
            context_ids, continuation_ids = encode_pair(tok, request.context, continuation)
            assert context_ids == tok.encode(request.context.rstrip(" "))
            ids = torch.tensor([context_ids + continuation_ids])
            with torch.no_grad():
                logp = torch.log_softmax(backend.model(ids)[0], dim=-1)
            positions = range(len(context_ids) - 1, ids.shape[1] - 1)
            expected = sum(logp[i, ids[0, i + 1]].item() for i in positions)
            assert score == pytest.approx(expected, abs=1e-4)
    assert results[0][2] < 0.0 and results[1][1] == 0.0
    assert results[0][0] != pytest.approx(results[0][1])


def test_describe(backend, checkpoint_dir):
    info = backend.describe()
    assert info["name"] == "native" and info["arch"] == "mamba2"
    assert info["path"] == str(checkpoint_dir)
    assert (info["dtype"], info["device"]) == ("float32", "cpu")
    assert "v3" in info["tokenizer"]
    assert len(info["config_sha256"]) == 16


def test_from_spec_errors_are_backend_errors(tmp_path):
    with pytest.raises(BackendError, match="not a known model"):
        NativeBackend.from_spec(str(tmp_path / "missing"))
    with pytest.raises(BackendError, match="unknown dtype"):
        NativeBackend.from_spec(str(tmp_path), dtype="int3")
