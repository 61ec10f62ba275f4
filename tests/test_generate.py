"""Batched generation (generate_batch) with both in-repo models: the batch changes nothing, the fixed-shape
step gives the plain step's tokens, and completions say why they ended.

transformers is the oracle elsewhere (test_mistral.py compares generate_batch with it token for token,
test_mamba2.py the plain generate loop); here each model is compared with itself under other batchings.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from evalkit.models.generate import GenerationJob, generate, generate_batch, sample_tokens, top_p_mask
from evalkit.models.logits import vocab_logits
from evalkit.models.mamba2 import Mamba2Config, Mamba2LM
from evalkit.models.mistral import Mistral, MistralConfig

VOCAB = 256
WINDOW = 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def peaked(model: torch.nn.Module, head: torch.Tensor) -> torch.nn.Module:
    """Scale the output head x8: logits with a spread (std ~4) like a trained model's instead of random
    weights' near-flat distribution, over which a ~1e-6 change of a logit (a batch of 8 rounds its matmuls
    unlike a batch of 1) can move a sampled token. The tests then check the batching, not the rounding."""
    with torch.no_grad():
        head.mul_(8.0)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module", params=["mamba2", "mistral"])
def model(request) -> torch.nn.Module:
    torch.manual_seed(0)
    if request.param == "mamba2":
        cfg = Mamba2Config(d_model=64, n_layers=2, vocab_size=VOCAB, d_state=16, headdim=16, n_groups=2, chunk_size=16)
        m = Mamba2LM(cfg)
        with torch.no_grad():  # decays and skips away from their uniform initial values
            for block in m.backbone.layers:
                block.mixer.A_log.normal_(0.0, 0.5)
                block.mixer.dt_bias.normal_(0.0, 0.5)
                block.mixer.D.normal_()
        return peaked(m, m.lm_head.weight)
    cfg = MistralConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=128, vocab_size=VOCAB,
                        sliding_window=WINDOW)
    m = Mistral(cfg)
    return peaked(m, m.output.weight)


def jobs(n_samples: int = 1, stop: tuple[str, ...] = ()) -> list[GenerationJob]:
    """Prompts of different lengths (some past the window) and different budgets."""
    gen = torch.Generator().manual_seed(3)
    sizes = [(5, 12), (17, 7), (2, 20), (11, 1), (30, 9), (8, 15)]
    prompts = [torch.randint(3, VOCAB, (n,), generator=gen).tolist() for n, _ in sizes]
    seeds = [[100 * i + s for s in range(n_samples)] for i in range(len(sizes))]
    return [GenerationJob(p, new, s, stop) for p, (_, new), s in zip(prompts, sizes, seeds, strict=True)]


def text(_prompt: list[int], ids: list[int]) -> str:
    return " ".join(map(str, ids))


def run(model, job_list, **kwargs) -> list[list[tuple[list[int], str]]]:
    out = generate_batch(model, job_list, text, eos_id=kwargs.pop("eos_id", -1), **kwargs)
    return [[(c.ids, c.finish) for c in samples] for samples in out]


SAMPLED = dict(temperature=0.8, top_p=0.9)


@pytest.mark.parametrize("sampling", [{}, SAMPLED], ids=["greedy", "sampled"])
def test_outputs_do_not_change_with_batch_size(model, sampling):
    """Batch 1 vs 8 (and 3, where rows join mid-run as others leave): the same tokens for every sample,
    greedy and seeded sampling alike."""
    job_list = jobs(n_samples=3 if sampling else 1)
    alone = run(model, job_list, batch_size=1, **sampling)
    assert run(model, job_list, batch_size=8, **sampling) == alone
    assert run(model, job_list, batch_size=3, **sampling) == alone
    assert run(model, job_list[::-1], batch_size=8, **sampling) == alone[::-1]  # neighbours do not matter
    if sampling:
        assert len({tuple(ids) for ids, _ in alone[0]}) > 1  # the seeds do differ


def test_greedy_batch_is_the_reference_loop(model):
    """generate_batch (rows forked, copied into a shared cache, moved as others finish) against the plain
    one-prompt generate() loop."""
    job_list = jobs()
    for job, [(ids, finish)] in zip(job_list, run(model, job_list, batch_size=4), strict=True):
        prompt = torch.tensor(job.prompt_ids)
        expected = generate(model, prompt, job.max_new_tokens)[len(prompt) :].tolist()
        assert (ids, finish) == (expected, "length")


@pytest.mark.parametrize("sampling", [{}, SAMPLED], ids=["greedy", "sampled"])
def test_fixed_shape_step_gives_the_plain_steps_tokens(model, sampling):
    """cuda_graphs=True decodes through decode_step in the preallocated cache (captured in CUDA graphs on a
    GPU, eager here); the default goes through forward_cached. Same tokens, with eos, stop strings and rows
    leaving at different steps."""
    job_list = jobs(n_samples=2, stop=("7 ",))
    plain = generate_batch(model, job_list, text, eos_id=5, batch_size=4, **sampling)
    static = generate_batch(model, job_list, text, eos_id=5, batch_size=4, cuda_graphs=True, **sampling)
    assert [[(c.ids, c.finish) for c in s] for s in static] == [[(c.ids, c.finish) for c in s] for s in plain]
    assert len({c.finish for s in plain for c in s}) > 1  # not every sample ended the same way


def test_completions_say_why_they_ended(model):
    """finish_reason is "stop" for eos or a stop string, "length" for the budget; n_tokens counts eos."""
    [[free]] = generate_batch(model, jobs()[:1], text, eos_id=-1)
    assert (free.finish, free.finish_reason, free.n_tokens) == ("length", "length", 12)
    eos = free.ids[4]
    first = free.ids.index(eos)
    [[ended]] = generate_batch(model, jobs()[:1], text, eos_id=eos)
    assert ended.ids == free.ids[:first]
    assert (ended.finish, ended.finish_reason, ended.n_tokens) == ("eos", "stop", first + 1)
    stop = f"{free.ids[2]} "
    [[stopped]] = generate_batch(model, jobs(stop=(stop,))[:1], text, eos_id=-1)
    assert stop in stopped.text and len(stopped.ids) < 12
    assert (stopped.finish, stopped.finish_reason, stopped.n_tokens) == ("stop", "stop", len(stopped.ids))
    [[empty]] = generate_batch(model, [GenerationJob([1, 2], 0, seeds=[0])], text, eos_id=-1)
    assert (empty.ids, empty.finish_reason, empty.n_tokens) == ([], "length", 0)


def test_a_step_computes_only_running_rows(model):
    """Finished rows leave at once: every decode step gets exactly the running rows, at most batch_size."""
    rows = []
    original = model.forward_cached

    def spy(input_ids, cache, last_only=False):
        if input_ids.shape[1] == 1:
            rows.append(input_ids.shape[0])
        return original(input_ids, cache, last_only)

    model.forward_cached = spy
    try:
        job_list = jobs()
        generate_batch(model, job_list, text, eos_id=-1, batch_size=4)
    finally:
        del model.forward_cached
    assert sum(rows) == sum(job.max_new_tokens - 1 for job in job_list)  # the first token comes from prefill
    assert max(rows) == 4 and rows[-1] == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graphs_give_the_eager_tokens(model, dtype):
    """On a GPU: decode steps replayed from CUDA graphs against the plain eager path, fp32 and bf16."""
    gpu = copy.deepcopy(model).to("cuda", dtype)
    job_list = jobs(n_samples=2, stop=("7 ",))
    for sampling in ({}, SAMPLED):
        plain = run(gpu, job_list, batch_size=5, **sampling)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="CUDA graph capture failed")  # no silent eager fallback
            graphed = run(gpu, job_list, batch_size=5, cuda_graphs=True, **sampling)
        assert graphed == plain


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vocab_logits_is_the_linear_head(dtype):
    """The head's CPU route for a few rows (weight @ hidden.T) against F.linear, for 1 to 20 rows."""
    gen = torch.Generator().manual_seed(4)
    weight = torch.randn(1000, 64, generator=gen).to(dtype)
    for rows in (1, 2, 3, 8, 15, 16, 20):
        hidden = torch.randn(rows, 1, 64, generator=gen).to(dtype)
        got = vocab_logits(hidden, weight)
        expected = torch.nn.functional.linear(hidden.float(), weight.float())
        assert got.shape == (rows, 1, 1000) and got.dtype == torch.float32 and got.is_contiguous()
        assert (got - expected).abs().max() < (1e-4 if dtype == torch.float32 else 0.25)


def top_p_reference(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The definition: most probable first, keep tokens until the mass before them reaches top_p."""
    descending, order = probs.sort(dim=-1, descending=True, stable=True)
    keep = descending.cumsum(-1) - descending < top_p
    return torch.zeros_like(keep).scatter(-1, order, keep)


@pytest.mark.parametrize("spread", [0.3, 2.0, 8.0])  # near-flat to peaked, over 32768 tokens
def test_top_p_mask_is_the_smallest_set_reaching_top_p(spread):
    logits = torch.randn(6, 32768, generator=torch.Generator().manual_seed(5)) * spread
    probs = torch.softmax(logits, dim=-1)
    for top_p in (0.5, 0.9, 0.95, 0.99):
        mask = top_p_mask(probs, top_p)
        assert torch.equal(mask, top_p_reference(probs, top_p))
        assert ((probs * mask).sum(-1) >= top_p).all()


def test_nucleus_sampling_draws_from_the_renormalised_top_set():
    """20000 draws from 5 tokens with top_p 0.8: the 3 most probable (mass 0.85) in proportion, never the rest."""
    probs = torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15])
    logits = probs.log().expand(20000, -1)
    generators = [torch.Generator().manual_seed(i) for i in range(20000)]
    tokens = sample_tokens(logits, temperature=1.0, top_p=0.8, generators=generators)
    freq = torch.bincount(tokens, minlength=5).float() / 20000
    expected = torch.tensor([0.0, 0.4, 0.0, 0.3, 0.15]) / 0.85
    assert freq[0] == 0 and freq[2] == 0
    assert (freq - expected).abs().max() < 0.015  # 3.5 standard errors at n = 20000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_top_p_mask_sorts_to_the_same_set():
    probs = torch.softmax(torch.randn(6, 32768, generator=torch.Generator().manual_seed(6)) * 2.0, dim=-1)
    assert torch.equal(top_p_mask(probs.cuda(), 0.95).cpu(), top_p_mask(probs, 0.95))
