"""evalkit's Mamba-2 against transformers' Mamba2ForCausalLM (5.23.0, CPU fp32) as the oracle."""

from __future__ import annotations

import math

import pytest
import torch
from mamba2_checkpoints import SMALL_SIZES, oracle, save_hf, save_native

from evalkit.models import load_model
from evalkit.models.generate import generate
from evalkit.models.mamba2 import (
    Mamba2Config,
    Mamba2LM,
    heads_to_state,
    load_mamba2,
    ssd_minimal,
    ssd_scan,
    state_to_heads,
)

FP32_TOL = 1e-4
# bf16 keeps 8 significant bits (relative rounding 2^-9 per operation; the logits themselves are rounded
# to 2^-6..2^-5 at |logit| 4..8) while the scan, states, norms and residual stay fp32. Measured on these
# random models (logit std ~1.2, max |logit| ~6.5): mean |diff| ~0.011, max |diff| ~0.13, argmax
# agreement ~97% (near-ties). Bounds with about 2x headroom:
BF16_MEAN_TOL = 0.025
BF16_MAX_TOL = 0.25
BF16_MIN_ARGMAX_AGREEMENT = 0.9


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ours_from(hf) -> Mamba2LM:
    model = Mamba2LM(Mamba2Config.from_hf(hf.config.to_dict()))
    model.load_state_dict(hf.state_dict())
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def small():
    hf = oracle(seed=1, **SMALL_SIZES)
    return hf, ours_from(hf)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The same random weights as a Hugging Face checkpoint and as a native one."""
    hf = oracle(seed=2)
    root = tmp_path_factory.mktemp("mamba2")
    return hf, save_hf(hf, root / "hf"), save_native(hf, root / "native")


def test_config_from_both_formats_agrees(checkpoints):
    hf, hf_dir, native_dir = checkpoints
    a = load_mamba2(hf_dir).config
    b = load_mamba2(native_dir).config
    assert a == b
    assert (a.n_heads, a.n_groups, a.d_state, a.headdim, a.chunk_size) == (4, 2, 128, 64, 256)
    assert a.dt_max == math.inf


@torch.no_grad()
def test_logits_match_transformers_many_chunks(small):
    hf, ours = small
    ids = torch.randint(0, hf.config.vocab_size, (3, 53), generator=torch.Generator().manual_seed(0))
    expected = hf(ids).logits
    got = ours(ids)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert (got - expected).abs().max().item() < FP32_TOL


@torch.no_grad()
@pytest.mark.parametrize("fmt", ["hf", "native"])
def test_checkpoint_logits_match_transformers(checkpoints, fmt):
    hf, hf_dir, native_dir = checkpoints
    model = load_model(hf_dir if fmt == "hf" else native_dir, dtype=torch.float32, device="cpu")
    assert isinstance(model, Mamba2LM)
    ids = torch.randint(0, 32768, (2, 300), generator=torch.Generator().manual_seed(1))  # 256 < 300 < 512
    assert (model(ids) - hf(ids).logits).abs().max().item() < FP32_TOL


@torch.no_grad()
def test_chunk_size_changes_nothing(small):
    hf, ours = small
    ids = torch.randint(0, hf.config.vocab_size, (2, 45), generator=torch.Generator().manual_seed(2))
    reference = ours(ids)
    ours.chunk_size = 8
    try:
        assert (ours(ids) - reference).abs().max().item() < 1e-5
    finally:
        ours.chunk_size = None


@torch.no_grad()
def test_cached_decode_matches_full_forward(small):
    hf, ours = small
    ids = torch.randint(0, hf.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(3))
    full = ours(ids)
    cache = ours.new_cache(2)
    pieces = [ours.forward_cached(ids[:, :2], cache)]  # shorter than the conv kernel
    pieces += [ours.forward_cached(ids[:, i : i + 1], cache) for i in range(2, 12)]
    pieces.append(ours.forward_cached(ids[:, 12:35], cache))  # a chunked continuation from a state
    pieces += [ours.forward_cached(ids[:, i : i + 1], cache) for i in range(35, 40)]
    stepped = torch.cat(pieces, dim=1)
    assert (stepped - full).abs().max().item() < FP32_TOL


@torch.no_grad()
def test_long_prompts_go_through_in_segments(small):
    hf, ours = small
    ids = torch.randint(0, hf.config.vocab_size, (2, 50), generator=torch.Generator().manual_seed(8))
    full = ours(ids)
    ours.prefill_segment = 12
    try:
        cache = ours.new_cache(2)
        segmented = ours.forward_cached(ids[:, :45], cache)
        last = ours.forward_cached(ids[:, 45:], cache, last_only=True)
    finally:
        ours.prefill_segment = 4096
    assert (segmented - full[:, :45]).abs().max().item() < FP32_TOL
    assert last.shape == (2, 1, hf.config.vocab_size)
    assert (last - full[:, -1:]).abs().max().item() < FP32_TOL


@torch.no_grad()
def test_cache_select_and_stack_keep_rows_independent(small):
    hf, ours = small
    ids = torch.randint(0, hf.config.vocab_size, (3, 20), generator=torch.Generator().manual_seed(4))
    full = ours(ids)
    caches = []
    for row, length in enumerate((7, 13, 9)):  # prompts of different lengths, prefilled alone
        cache = ours.new_cache(1)
        ours.forward_cached(ids[row : row + 1, :length], cache)
        for i in range(length, 13):  # then brought to length 13 one token at a time
            ours.forward_cached(ids[row : row + 1, i : i + 1], cache)
        caches.append(cache)
    batch = type(caches[0]).stack(caches)
    logits = [ours.forward_cached(ids[:, i : i + 1], batch) for i in range(13, 16)]
    assert (torch.cat(logits, 1) - full[:, 13:16]).abs().max().item() < FP32_TOL
    # Keep rows 2 and 0 (reordered) and fork row 2.
    picked = batch.select(torch.tensor([2, 0, 2]))
    out = ours.forward_cached(ids[[2, 0, 2], 16:17], picked)
    assert (out - full[[2, 0, 2], 16:17]).abs().max().item() < FP32_TOL
    assert batch.batch_size == 3 and picked.batch_size == 3


@torch.no_grad()
def test_greedy_generation_matches_transformers(checkpoints):
    hf, hf_dir, _ = checkpoints
    model = load_model(hf_dir, dtype=torch.float32, device="cpu")
    prompt = torch.randint(3, 32768, (1, 11), generator=torch.Generator().manual_seed(5))
    expected = hf.generate(
        prompt, max_new_tokens=64, min_new_tokens=64, do_sample=False, use_cache=True, eos_token_id=None
    )
    got = generate(model, prompt, max_new_tokens=64)
    assert got.shape == (1, 11 + 64)
    assert got.tolist() == expected.tolist()


def test_generate_uses_the_cache_not_the_prefix(small):
    _, ours = small
    calls = []
    original = ours.forward_cached

    def spy(input_ids, cache, last_only=False):
        calls.append(input_ids.shape[1])
        return original(input_ids, cache, last_only)

    ours.forward_cached = spy
    try:
        out = generate(ours, torch.tensor([5, 6, 7, 8]), max_new_tokens=6)
    finally:
        del ours.forward_cached
    assert out.shape == (10,) and out[:4].tolist() == [5, 6, 7, 8]
    assert calls == [4, 1, 1, 1, 1, 1]


@torch.no_grad()
def test_bf16_close_to_fp32(checkpoints):
    _, hf_dir, _ = checkpoints
    fp32 = load_model(hf_dir, dtype=torch.float32, device="cpu")
    bf16 = load_model(hf_dir, dtype=torch.bfloat16, device="cpu")
    assert bf16.backbone.embeddings.weight.dtype == torch.bfloat16
    assert bf16.backbone.layers[0].mixer.A_log.dtype == torch.float32  # kept fp32 like the references
    ids = torch.randint(0, 32768, (2, 70), generator=torch.Generator().manual_seed(6))
    a, b = fp32(ids), bf16(ids)
    assert b.dtype == torch.float32
    assert_bf16_close(b, a)
    cache = bf16.new_cache(2)
    pieces = [bf16.forward_cached(ids[:, :60], cache)]
    pieces += [bf16.forward_cached(ids[:, i : i + 1], cache) for i in range(60, 70)]
    stepped = torch.cat(pieces, dim=1)
    assert_bf16_close(stepped, a)


def assert_bf16_close(got: torch.Tensor, fp32: torch.Tensor) -> None:
    diff = (got - fp32).abs()
    assert diff.mean().item() < BF16_MEAN_TOL
    assert diff.max().item() < BF16_MAX_TOL
    assert (got.argmax(-1) == fp32.argmax(-1)).float().mean().item() >= BF16_MIN_ARGMAX_AGREEMENT


def ssd_inputs(seed: int, b: int = 2, t: int = 48, h: int = 4, p: int = 3, g: int = 2, n: int = 5):
    """Random scan inputs: x (b,t,h,p), dt (b,t,h) > 0, A (h) < 0, B and C (b,t,g,n)."""
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, t, h, p, generator=gen),
        torch.rand(b, t, h, generator=gen),
        -torch.rand(h, generator=gen) * 2,
        torch.randn(b, t, g, n, generator=gen),
        torch.randn(b, t, g, n, generator=gen),
    )


def test_ssd_minimal_matches_a_token_by_token_recurrence():
    """The readable definition against the recurrence itself, from a non-zero state."""
    x, dt, A, B, C = ssd_inputs(7)
    b, t, h, p = x.shape
    g, n = B.shape[2:]
    start = torch.randn(b, h, p, n, generator=torch.Generator().manual_seed(8))
    y, final = ssd_minimal(x, dt, A, B, C, chunk_size=16, state=start)
    # Per head: h_t = exp(dt A) h_{t-1} + dt x_t (outer) B_t ; y_t = h_t . C_t, head k reading group k // (h/g).
    state = start
    head_group = torch.arange(h) // (h // g)
    expected = []
    for i in range(t):
        Bh, Ch = B[:, i, head_group], C[:, i, head_group]  # (b,h,n)
        state = (
            state * torch.exp(dt[:, i] * A)[..., None, None]
            + (dt[:, i, :, None] * x[:, i])[..., None] * Bh[:, :, None]
        )
        expected.append((state * Ch[:, :, None]).sum(-1))
    assert (y - torch.stack(expected, 1)).abs().max().item() < 1e-5
    assert (final - state).abs().max().item() < 1e-5


@pytest.mark.parametrize("chunk_size", [16, 7, 64])  # ssd_minimal's chunk; a length not a multiple; one chunk
@pytest.mark.parametrize("with_state", [False, True])
def test_ssd_scan_matches_ssd_minimal(chunk_size, with_state):
    """The fast scan against the definition: outputs and the final state, in the cache layout."""
    x, dt, A, B, C = ssd_inputs(9)
    b, t, h, p = x.shape
    g, n = B.shape[2:]
    start = torch.randn(b, h, p, n, generator=torch.Generator().manual_seed(10)) if with_state else None
    y_ref, final_ref = ssd_minimal(x, dt, A, B, C, chunk_size=16, state=start)
    cache_state = None if start is None else heads_to_state(start, g)
    y, final = ssd_scan(x, dt, A, B, C, chunk_size=chunk_size, state=cache_state)
    assert (y - y_ref).abs().max().item() < 1e-5
    assert final.shape == (b, g, n, h // g * p)
    assert (state_to_heads(final, p) - final_ref).abs().max().item() < 1e-5


def test_state_layout_helpers_are_inverse_and_group_the_heads():
    heads = torch.randn(2, 6, 3, 5)  # (b, h, p, n): 6 heads in 3 groups of 2
    state = heads_to_state(heads, n_groups=3)
    assert state.shape == (2, 3, 5, 6)
    assert torch.equal(state[1, 2, :, 3:], heads[1, 5].t())  # group 2's second head, transposed
    assert torch.equal(state_to_heads(state, headdim=3), heads)


def test_cache_nbytes_counts_both_states(small):
    _, ours = small
    cfg = ours.config
    cache = ours.new_cache(3)
    per_row_layer = cfg.d_conv * cfg.conv_dim * 4 + cfg.n_heads * cfg.headdim * cfg.d_state * 4  # fp32 model
    assert cache.nbytes() == 3 * cfg.n_layers * per_row_layer


def test_decode_step_reads_nothing_back_from_the_device(small):
    """The step a CUDA graph captures: on meta tensors (shapes, no data) any host read (.item(), bool(),
    .tolist(), a branch on values) raises; so does a shape that depends on the data."""
    _, ours = small
    with torch.device("meta"):
        model = Mamba2LM(ours.config)
    cache = model.new_cache(3)
    logits = model.decode_step(torch.zeros(3, dtype=torch.long, device="meta"), cache)
    assert logits.shape == (3, ours.config.vocab_size) and logits.dtype == torch.float32
