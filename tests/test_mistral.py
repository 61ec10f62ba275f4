"""The in-repo Mistral decoder against transformers' MistralForCausalLM (random weights, tiny configs).

Both checkpoint layouts are exercised from the same weights: Hugging Face (save_pretrained) and native
(params.json + consolidated.safetensors with native names and interleaved-RoPE wq/wk rows, as
mistral-inference ships them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from evalkit.models import mistral
from evalkit.models.checkpoint import CheckpointError
from evalkit.models.generate import GenerationJob, generate, generate_batch, score_continuations
from evalkit.models.mistral import KVCache, Mistral, MistralConfig, load_mistral

transformers = pytest.importorskip("transformers")


def load(path: Path, dtype: torch.dtype | None = None) -> Mistral:
    """The model on the CPU, next to the oracle, even where CUDA is present."""
    return load_mistral(path, dtype=dtype, device="cpu")


VOCAB = 97
WINDOW = 16
SEQ = 100  # > 6 windows
ATOL = 1e-4

# The name map of mistral.py (_HF_LAYER), repeated on purpose: an oracle must not import what it checks.
HF_TO_NATIVE = {
    "self_attn.q_proj": "attention.wq",
    "self_attn.k_proj": "attention.wk",
    "self_attn.v_proj": "attention.wv",
    "self_attn.o_proj": "attention.wo",
    "mlp.gate_proj": "feed_forward.w1",
    "mlp.down_proj": "feed_forward.w2",
    "mlp.up_proj": "feed_forward.w3",
    "input_layernorm": "attention_norm",
    "post_attention_layernorm": "ffn_norm",
}


def make_hf(window: int | None, theta: float = 10000.0, seed: int = 0, attn: str = "sdpa"):
    """A tiny random MistralForCausalLM with GQA (4 query heads, 2 KV heads)."""
    torch.manual_seed(seed)
    cfg = transformers.MistralConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=window,
        rms_norm_eps=1e-5,
        rope_theta=theta,
        eos_token_id=None,
        bos_token_id=None,
        attn_implementation=attn,
    )
    model = transformers.MistralForCausalLM(cfg).eval()
    with torch.no_grad():
        # The default init (std 0.02) leaves attention nearly uniform; larger weights make the
        # attention pattern, hence the window and RoPE, visible in the logits.
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.15)
            else:
                p.uniform_(0.5, 1.5)
    return model


def to_native_name(hf_name: str) -> str:
    top = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight"}
    if hf_name in top:
        return top[hf_name]
    if hf_name == "lm_head.weight":
        return "output.weight"
    _, _, i, rest = hf_name.split(".", 3)
    module = rest.removesuffix(".weight")
    return f"layers.{i}.{HF_TO_NATIVE[module]}.weight"


def half_to_interleaved(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of the HF converter's permutation: back to native interleaved RoPE rows."""
    rows, dim = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, dim).transpose(1, 2).reshape(rows, dim)


def write_native(hf_model, path: Path, *, with_theta: bool = True, with_window: bool = True) -> Path:
    """Write the weights of `hf_model` the way mistral-inference ships them."""
    c = hf_model.config
    state = {}
    for name, w in hf_model.state_dict().items():
        w = w.detach().clone().contiguous()
        if name.endswith("q_proj.weight"):
            w = half_to_interleaved(w, c.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            w = half_to_interleaved(w, c.num_key_value_heads)
        state[to_native_name(name)] = w.contiguous()
    path.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path / "consolidated.safetensors"))
    params = {
        "dim": c.hidden_size,
        "n_layers": c.num_hidden_layers,
        "head_dim": c.head_dim,
        "hidden_dim": c.intermediate_size,
        "n_heads": c.num_attention_heads,
        "n_kv_heads": c.num_key_value_heads,
        "norm_eps": c.rms_norm_eps,
        "vocab_size": c.vocab_size,
    }
    if with_theta:
        params["rope_theta"] = c.rope_parameters["rope_theta"]
    if with_window and c.sliding_window is not None:
        params["sliding_window"] = c.sliding_window
    (path / "params.json").write_text(json.dumps(params))
    return path


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def swa(tmp_path_factory):
    """(HF oracle with W=16, HF checkpoint dir, native checkpoint dir)."""
    hf = make_hf(WINDOW)
    root = tmp_path_factory.mktemp("swa")
    hf.save_pretrained(root / "hf")
    write_native(hf, root / "native")
    return hf, root / "hf", root / "native"


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """(HF oracle without a window, theta 1e6, HF checkpoint dir, native checkpoint dir)."""
    hf = make_hf(None, theta=1e6, seed=1)
    root = tmp_path_factory.mktemp("full")
    hf.save_pretrained(root / "hf")
    write_native(hf, root / "native")
    return hf, root / "hf", root / "native"


@pytest.fixture(params=[128, 5], ids=["block128", "block5"])
def query_block(request, monkeypatch):
    """Prefill query block size: the default (> W here) and one smaller than W, so that several
    blocks fall inside the first window and reach back into the cache."""
    monkeypatch.setattr(mistral, "QUERY_BLOCK", request.param)
    return request.param


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (3, SEQ), generator=torch.Generator().manual_seed(123))


def greedy(model: Mistral, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    """The new tokens of evalkit's greedy generation (prefill into the cache, then cached steps)."""
    return generate(model, prompt, max_new_tokens=steps)[:, prompt.shape[1] :]


@torch.no_grad()
def hf_greedy(hf, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    out = hf.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=steps,
        min_new_tokens=steps,
        do_sample=False,
        pad_token_id=0,
    )
    return out[:, prompt.shape[1] :]


# ----------------------------------------------------------------------------------------- oracle


@torch.no_grad()
def test_oracle_really_is_windowed(swa, ids):
    """transformers' SDPA and eager paths agree, and differ from full attention only beyond W tokens."""
    hf, _, _ = swa
    windowed = hf(ids).logits
    full_cfg = transformers.MistralConfig(**{**hf.config.to_dict(), "sliding_window": None})
    full_model = transformers.MistralForCausalLM(full_cfg).eval()
    full_model.load_state_dict(hf.state_dict())
    dense = full_model(ids).logits
    assert torch.allclose(windowed[:, :WINDOW], dense[:, :WINDOW], atol=ATOL)
    assert (windowed[:, WINDOW:] - dense[:, WINDOW:]).abs().max() > 0.5

    hf.config._attn_implementation = "eager"
    try:
        eager = hf(ids).logits
    finally:
        hf.config._attn_implementation = "sdpa"
    assert torch.allclose(eager, windowed, atol=ATOL)


# ----------------------------------------------------------------------------------------- logits


@pytest.mark.parametrize("fmt", ["hf", "native"])
@pytest.mark.parametrize("variant", ["swa", "full"])
@torch.no_grad()
def test_logits_match_transformers(fmt, variant, swa, full, ids, query_block):
    hf, hf_dir, native_dir = swa if variant == "swa" else full
    model = load(hf_dir if fmt == "hf" else native_dir)
    assert model.config.sliding_window == hf.config.sliding_window
    assert model.config.rope_theta == hf.config.rope_parameters["rope_theta"]
    ref = hf(ids).logits
    got = model(ids)
    assert got.shape == ref.shape == (3, SEQ, VOCAB)
    assert (got - ref).abs().max() < ATOL


def test_native_file_really_uses_interleaved_rope(swa):
    """The fixture's native wq/wk rows differ from HF's (else the permutation would go untested)."""
    _, hf_dir, native_dir = swa
    hf_w = load_file(str(hf_dir / "model.safetensors"))
    nat_w = load_file(str(native_dir / "consolidated.safetensors"))
    q_hf, q_nat = hf_w["model.layers.0.self_attn.q_proj.weight"], nat_w["layers.0.attention.wq.weight"]
    assert not torch.equal(q_hf, q_nat)
    assert torch.equal(q_hf.sort(dim=0).values, q_nat.sort(dim=0).values)  # same rows, permuted
    assert torch.equal(hf_w["model.layers.0.self_attn.v_proj.weight"], nat_w["layers.0.attention.wv.weight"])


@torch.no_grad()
def test_sharded_hf_checkpoint(swa, ids, tmp_path):
    hf, _, _ = swa
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model = load(tmp_path)
    assert (model(ids) - hf(ids).logits).abs().max() < ATOL


# ----------------------------------------------------------------------------------------- cache


@pytest.mark.parametrize("variant", ["swa", "full"])
@torch.no_grad()
def test_chunked_prefill_matches_one_shot(variant, swa, full, ids, query_block):
    """Chunks shorter and longer than W, single tokens, all after a non-empty cache."""
    _, hf_dir, _ = swa if variant == "swa" else full
    model = load(hf_dir)
    one_shot = model(ids)
    cache = model.new_cache(ids.shape[0])
    pieces, start = [], 0
    for size in (7, 30, 1, 1, 15, 16, 17, 13):
        pieces.append(model.forward_cached(ids[:, start : start + size], cache))
        start += size
    assert start == SEQ
    assert (torch.cat(pieces, dim=1) - one_shot).abs().max() < 1e-5
    assert cache.lengths.tolist() == [SEQ] * 3
    # last_only computes just the next-token logits, the same numbers.
    assert (model(ids, last_only=True) - one_shot[:, -1:]).abs().max() < 1e-5
    cache = model.new_cache(ids.shape[0])
    model.forward_cached(ids[:, :40], cache)
    assert (model.forward_cached(ids[:, 40:], cache, last_only=True) - one_shot[:, -1:]).abs().max() < 1e-5


@torch.no_grad()
def test_cache_holds_window_positions_only(swa):
    """After 10 x W tokens, by a long prefill then decode steps, each layer holds exactly W positions."""
    _, hf_dir, _ = swa
    model = load(hf_dir)
    c = model.config
    tokens = torch.randint(0, VOCAB, (2, 10 * WINDOW), generator=torch.Generator().manual_seed(5))
    cache = model.new_cache(2)
    model.forward_cached(tokens[:, : 7 * WINDOW + 3], cache)
    for i in range(7 * WINDOW + 3, 10 * WINDOW):
        model.forward_cached(tokens[:, i : i + 1], cache)
    for k, v in zip(cache.k, cache.v, strict=True):
        assert k.shape == v.shape == (2, c.n_kv_heads, WINDOW, c.head_dim)
    expected = list(range(9 * WINDOW, 10 * WINDOW))
    for row in cache.slot_pos:
        assert sorted(row.tolist()) == expected
    assert cache.nbytes() == c.n_layers * 2 * 2 * c.n_kv_heads * WINDOW * c.head_dim * 4


@torch.no_grad()
def test_cache_without_window_grows_with_context(full):
    _, hf_dir, _ = full
    model = load(hf_dir)
    cache = model.new_cache(1)
    model.forward_cached(torch.zeros(1, 300, dtype=torch.long), cache)
    assert cache.slots >= 300
    assert sorted(p for p in cache.slot_pos[0].tolist() if p >= 0) == list(range(300))


def tiny_mistral(window: int | None, seed: int = 0) -> Mistral:
    torch.manual_seed(seed)
    cfg = MistralConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, hidden_dim=64, vocab_size=VOCAB,
                        sliding_window=window)
    return Mistral(cfg).eval().requires_grad_(False)


@torch.no_grad()
def test_slot_arithmetic_follows_the_worked_example():
    """KVCache's docstring example, W = 4: two prompts prefilled alone, stacked, one decode step."""
    model = tiny_mistral(window=4)
    caches = [model.new_cache(1), model.new_cache(1)]
    model.forward_cached(torch.arange(6)[None], caches[0])
    model.forward_cached(torch.arange(2)[None], caches[1])
    assert caches[0].slot_pos.tolist() == [[4, 5, 2, 3]]
    assert caches[1].slot_pos.tolist() == [[0, 1, -1, -1]]
    cache = KVCache.stack(caches)
    model.forward_cached(torch.tensor([[6], [2]]), cache)
    assert cache.slot_pos.tolist() == [[4, 5, 6, 3], [0, 1, 2, -1]]
    assert cache.lengths.tolist() == [7, 3]


@pytest.mark.parametrize("variant", ["swa", "full"])
@torch.no_grad()
def test_decode_step_in_a_preallocated_cache_matches_each_rows_own_forward(variant, swa, full):
    """What batched generation does: prompts prefilled alone, copied into rows of a cache allocated once
    (row 3 left free), then fixed-shape decode steps over a view of the running rows. Rows cross the
    window at different steps; each row's logits are those of its own full forward."""
    _, hf_dir, _ = swa if variant == "swa" else full
    model = load(hf_dir)
    gen = torch.Generator().manual_seed(23)
    prompts = [torch.randint(0, VOCAB, (1, n), generator=gen) for n in (3, 14, 29)]
    steps = 20
    cache = model.new_cache(4, length=29 + steps)
    for row, prompt in enumerate(prompts):
        one = model.new_cache(1)
        model.forward_cached(prompt, one)
        cache.assign(torch.tensor([row]), one)
    running = cache.head(3)
    tokens = torch.randint(0, VOCAB, (3, steps), generator=gen)
    slots_before = cache.slots
    got = torch.stack([model.decode_step(tokens[:, i], running) for i in range(steps)], dim=1)
    assert cache.slots == slots_before and cache.lengths[:3].tolist() == [3 + steps, 14 + steps, 29 + steps]
    for row, prompt in enumerate(prompts):
        ref = model(torch.cat((prompt, tokens[row : row + 1]), dim=1))[0, -steps:]
        assert (got[row] - ref).abs().max() < 1e-5
        assert got[row].argmax(-1).tolist() == ref.argmax(-1).tolist()


def test_decode_step_reads_nothing_back_from_the_device(swa):
    """The step a CUDA graph captures: on meta tensors (shapes, no data) any host read (.item(), bool(),
    .tolist(), a branch on values) raises; so would a shape that depends on the data."""
    hf, _, _ = swa
    with torch.device("meta"):
        model = Mistral(MistralConfig.from_hf(hf.config.to_dict()))
        cache = model.new_cache(3, length=40)
    logits = model.decode_step(torch.zeros(3, dtype=torch.long, device="meta"), cache)
    assert logits.shape == (3, VOCAB) and logits.dtype == torch.float32
    assert cache.slots == WINDOW


# ----------------------------------------------------------------------------------------- generation


@pytest.mark.parametrize("fmt", ["hf", "native"])
def test_greedy_generation_matches_transformers(fmt, swa):
    """64 greedy tokens after a 20-token prompt cross the 16-token window several times."""
    hf, hf_dir, native_dir = swa
    model = load(hf_dir if fmt == "hf" else native_dir)
    prompt = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(7))
    ref = hf_greedy(hf, prompt, 64)
    got = greedy(model, prompt, 64)
    assert got.tolist() == ref.tolist()
    assert len(set(ref[0].tolist())) > 5  # a non-degenerate continuation


def test_generate_batch_matches_transformers(swa):
    """The shared batched generator: prompts of different lengths prefilled alone, forked, stacked,
    rows leaving as they finish (batch of 2 for 3 jobs x 2 samples); greedy, so every sample is HF's."""
    hf, hf_dir, _ = swa
    model = load(hf_dir)
    gen = torch.Generator().manual_seed(17)
    prompts = [torch.randint(0, VOCAB, (1, n), generator=gen) for n in (9, 33, 21)]
    lengths = (40, 25, 50)
    jobs = [
        GenerationJob(prompt_ids=p[0].tolist(), max_new_tokens=n, seeds=[1, 2])
        for p, n in zip(prompts, lengths, strict=True)
    ]
    results = generate_batch(model, jobs, decode=lambda _p, ids: " ".join(map(str, ids)), eos_id=-1, batch_size=2)
    for p, n, samples in zip(prompts, lengths, results, strict=True):
        ref = hf_greedy(hf, p, n)[0].tolist()
        assert [c.ids for c in samples] == [ref, ref]
        assert all(c.finish == "length" for c in samples)


@torch.no_grad()
def test_score_continuations_matches_transformers(swa):
    """Log-likelihood scoring: the context's cache forked for right-padded continuations crossing W."""
    hf, hf_dir, _ = swa
    model = load(hf_dir)
    gen = torch.Generator().manual_seed(19)
    context = torch.randint(0, VOCAB, (30,), generator=gen).tolist()
    continuations = [torch.randint(0, VOCAB, (n,), generator=gen).tolist() for n in (1, 5, 40)]
    got = score_continuations(model, context, continuations)
    for cont, score in zip(continuations, got, strict=True):
        ids = torch.tensor([context + cont])
        logp = torch.log_softmax(hf(ids).logits[0, len(context) - 1 : -1].double(), dim=-1)
        ref = logp.gather(-1, torch.tensor(cont)[:, None]).sum().item()
        assert abs(score - ref) < 1e-3


@torch.no_grad()
def test_stacked_caches_of_different_lengths(swa):
    """Prompts prefilled one by one, merged into one batch, decode as if each ran alone; rows can leave."""
    hf, hf_dir, _ = swa
    model = load(hf_dir)
    gen = torch.Generator().manual_seed(11)
    prompts = [torch.randint(0, VOCAB, (1, n), generator=gen) for n in (5, 23, 40)]
    refs = [hf_greedy(hf, p, 30)[0].tolist() for p in prompts]

    caches, last = [], []
    for p in prompts:
        cache = model.new_cache(1)
        last.append(model.forward_cached(p, cache)[:, -1])
        caches.append(cache)
    cache = KVCache.stack(caches)
    assert cache.lengths.tolist() == [5, 23, 40]
    logits = torch.cat(last)
    rows, out = [0, 1, 2], {0: [], 1: [], 2: []}
    for step in range(30):
        nxt = logits.argmax(-1)
        for r, t in zip(rows, nxt.tolist(), strict=True):
            out[r].append(t)
        if step == 12:  # the middle prompt finishes early and leaves the batch
            keep = [0, 2]
            rows = [rows[i] for i in keep]
            cache = cache.select(keep)
            nxt = nxt[keep]
        logits = model.forward_cached(nxt[:, None], cache)[:, -1]
    assert out[0] == refs[0]
    assert out[2] == refs[2]
    assert out[1] == refs[1][:13]


@pytest.mark.parametrize("variant", ["swa", "full"])
@torch.no_grad()
def test_chunk_after_stacking_caches_of_different_lengths(variant, swa, full, query_block):
    """A multi-token chunk on rows at different positions matches each row's own one-shot forward."""
    _, hf_dir, _ = swa if variant == "swa" else full
    model = load(hf_dir)
    gen = torch.Generator().manual_seed(13)
    prompts = [torch.randint(0, VOCAB, (1, n), generator=gen) for n in (3, 14, 29, 50)]
    chunk = torch.randint(0, VOCAB, (4, 21), generator=gen)
    caches = []
    for p in prompts:
        caches.append(model.new_cache(1))
        model.forward_cached(p, caches[-1])
    cache = KVCache.stack(caches)
    got = model.forward_cached(chunk, cache)
    refs = [model(torch.cat((p, chunk[row : row + 1]), dim=1))[0, -21:] for row, p in enumerate(prompts)]
    for row, ref in enumerate(refs):
        assert (got[row] - ref).abs().max() < 1e-5
    assert cache.lengths.tolist() == [24, 35, 50, 71]

    # last_only (the last layer computes the final query only) gives the same last logits, and the
    # cache it leaves behind is complete: the next chunk matches too. 5 tokens < W, 16 tokens = W.
    cache = KVCache.stack(caches)
    assert (
        model.forward_cached(chunk[:, :5], cache, last_only=True)[:, 0] - torch.stack(refs)[:, 4]
    ).abs().max() < 1e-5
    tail = model.forward_cached(chunk[:, 5:], cache, last_only=True)[:, 0]
    assert (tail - torch.stack(refs)[:, -1]).abs().max() < 1e-5


# ----------------------------------------------------------------------------------------- dtypes


@torch.no_grad()
def test_bf16_close_to_fp32(swa, ids):
    """bf16 weights and activations against fp32, same checkpoint. Tolerances (measured on this
    config: 2.1%, 3.7%, 98%): relative L2 error of the logits < 5%, largest error < 10% of the
    largest |logit|, same argmax at >= 90% of positions. bf16 keeps 8 mantissa bits (0.4% per rounding),
    and the errors of the projections, attention and norms add up across layers."""
    _, hf_dir, _ = swa
    fp32 = load(hf_dir)(ids)
    model = load(hf_dir, dtype=torch.bfloat16)
    assert model.tok_embeddings.weight.dtype == torch.bfloat16

    def close(got: torch.Tensor, ref: torch.Tensor) -> bool:
        rel_l2 = (got - ref).norm() / ref.norm()
        rel_max = (got - ref).abs().max() / ref.abs().max()
        same_argmax = (got.argmax(-1) == ref.argmax(-1)).float().mean()
        return bool(rel_l2 < 0.05 and rel_max < 0.10 and same_argmax >= 0.9)

    assert close(model(ids), fp32)
    # Chunked prefill and decode steps in bf16 (the cache holds bf16 keys and values).
    cache = model.new_cache(ids.shape[0])
    pieces = [model.forward_cached(ids[:, :40], cache), model.forward_cached(ids[:, 40:90], cache)]
    pieces += [model.forward_cached(ids[:, i : i + 1], cache) for i in range(90, SEQ)]
    assert cache.k[0].dtype == torch.bfloat16
    assert close(torch.cat(pieces, dim=1), fp32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@torch.no_grad()
def test_cuda_matches_cpu(swa, ids):
    _, hf_dir, _ = swa
    cpu = load(hf_dir)(ids)
    model = load_mistral(hf_dir, device="cuda")
    assert (model(ids.cuda()).cpu() - cpu).abs().max() < 1e-3
    assert greedy(model, ids[:, :20].cuda(), 40).tolist() == greedy(load(hf_dir), ids[:, :20], 40).tolist()


# ----------------------------------------------------------------------------------------- configs


def test_config_from_hf_variants():
    base = {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": VOCAB,
        "rms_norm_eps": 1e-5,
    }
    v5 = MistralConfig.from_hf(
        {**base, "rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}, "sliding_window": None}
    )
    assert (v5.rope_theta, v5.sliding_window, v5.head_dim) == (1e6, None, 16)
    v4 = MistralConfig.from_hf({**base, "rope_theta": 500000.0, "sliding_window": 4096})
    assert (v4.rope_theta, v4.sliding_window) == (500000.0, 4096)
    with pytest.raises(ValueError, match="rope"):
        MistralConfig.from_hf({**base, "rope_parameters": {"rope_theta": 1e6, "rope_type": "yarn"}})


def test_config_from_native_rope_theta_defaults():
    base = {
        "dim": 4096,
        "n_layers": 32,
        "head_dim": 128,
        "hidden_dim": 14336,
        "n_heads": 32,
        "n_kv_heads": 8,
        "norm_eps": 1e-5,
    }
    v01 = MistralConfig.from_native({**base, "vocab_size": 32000, "sliding_window": 4096})
    assert (v01.rope_theta, v01.sliding_window) == (10000.0, 4096)
    v03 = MistralConfig.from_native({**base, "vocab_size": 32768, "rope_theta": 1000000.0})
    assert (v03.rope_theta, v03.sliding_window) == (1e6, None)
    assert MistralConfig.from_native({**base, "vocab_size": 32768}).rope_theta == 1e6


@torch.no_grad()
def test_native_without_rope_theta_loads_as_mistral_v01(tmp_path, ids):
    """A params.json like Mistral-7B-v0.1's (window, no rope_theta) must run RoPE with theta 10000."""
    hf = make_hf(WINDOW, theta=10000.0, seed=3)
    write_native(hf, tmp_path, with_theta=False)
    model = load(tmp_path)
    assert (model(ids) - hf(ids).logits).abs().max() < ATOL


@torch.no_grad()
def test_hf_config_with_top_level_rope_theta(full, ids, tmp_path):
    """A transformers-4 / hub style config.json (top-level rope_theta, no rope_parameters)."""
    hf, hf_dir, _ = full
    config = json.loads((hf_dir / "config.json").read_text())
    theta = config.pop("rope_parameters")["rope_theta"]
    config["rope_theta"] = theta
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").symlink_to(hf_dir / "model.safetensors")
    model = load(tmp_path)
    assert model.config.rope_theta == 1e6
    assert (model(ids) - hf(ids).logits).abs().max() < ATOL


# ----------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("fmt", ["hf", "native"])
def test_missing_tensor_is_checkpoint_error(fmt, swa, tmp_path):
    _, hf_dir, native_dir = swa
    src = hf_dir if fmt == "hf" else native_dir
    weights = "model.safetensors" if fmt == "hf" else "consolidated.safetensors"
    config = "config.json" if fmt == "hf" else "params.json"
    state = load_file(str(src / weights))
    victim = "model.layers.1.mlp.up_proj.weight" if fmt == "hf" else "layers.1.feed_forward.w3.weight"
    del state[victim]
    save_file(state, str(tmp_path / weights))
    (tmp_path / config).write_text((src / config).read_text())
    with pytest.raises(CheckpointError, match=r"layers\.1\.feed_forward\.w3"):
        load(tmp_path)


@pytest.mark.parametrize("fmt", ["hf", "native"])
@pytest.mark.parametrize("victim", ["wk", "wv"])
def test_bad_shape_is_checkpoint_error(fmt, victim, swa, tmp_path):
    _, hf_dir, native_dir = swa
    src = hf_dir if fmt == "hf" else native_dir
    weights = "model.safetensors" if fmt == "hf" else "consolidated.safetensors"
    config = "config.json" if fmt == "hf" else "params.json"
    state = load_file(str(src / weights))
    hf_name = {"wk": "k_proj", "wv": "v_proj"}[victim]
    name = f"model.layers.0.self_attn.{hf_name}.weight" if fmt == "hf" else f"layers.0.attention.{victim}.weight"
    state[name] = torch.zeros(48, 64)  # 3 heads' rows instead of 2
    save_file(state, str(tmp_path / weights))
    (tmp_path / config).write_text((src / config).read_text())
    with pytest.raises(CheckpointError, match=r"shape \(48, 64\)"):
        load(tmp_path)


def test_bad_config_is_checkpoint_error(swa, tmp_path):
    _, _, native_dir = swa
    params = json.loads((native_dir / "params.json").read_text())
    del params["dim"]
    (tmp_path / "params.json").write_text(json.dumps(params))
    (tmp_path / "consolidated.safetensors").symlink_to(native_dir / "consolidated.safetensors")
    with pytest.raises(CheckpointError, match="dim"):
        load(tmp_path)
