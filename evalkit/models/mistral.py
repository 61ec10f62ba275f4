"""A Mistral-architecture decoder (Mistral 7B, Mathstral 7B) in plain PyTorch.

Pre-norm transformer: RMSNorm, rotary position embeddings, grouped-query attention with an optional
sliding window, SiLU-gated MLP, untied input and output embeddings.

Sliding window W: the query at position q sees the keys at positions q-W < k <= q (W keys including
its own); no window means full causal attention.

KV cache: a rolling buffer per layer. The key of position p lives in slot p mod W, with RoPE already
applied at its absolute position, so the buffer never holds more than W positions whatever the
context length. Every batch row keeps its own position, which lets caches of prompts prefilled
separately (different lengths) be stacked into one batch. Without a window the buffer simply grows.

Attention over a long chunk runs blockwise: each block of queries attends only the keys its window can
reach, so the cost is linear in the length beyond W and each call stays on the fused SDPA kernels
instead of one dense length x length mask.

Weights use the HF rotate-half RoPE layout; native (mistral-inference) checkpoints rotate interleaved
pairs, so their wq/wk rows are permuted on load. Module names follow the native checkpoint.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Queries per attention block in prefill. A block of b queries reads b + W - 1 keys, of which each query
# sees W: smaller blocks waste less (11% at 128 with W=1024), larger ones pay less per-call overhead.
QUERY_BLOCK = 128
# Slot granularity when the cache grows (it never grows beyond the window).
CACHE_GROWTH = 256


# ----------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class MistralConfig:
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_dim: int
    vocab_size: int
    norm_eps: float = 1e-5
    rope_theta: float = 1e6
    sliding_window: int | None = None

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for RoPE")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError(f"sliding_window must be a positive int or None, got {self.sliding_window}")

    @classmethod
    def from_hf(cls, cfg: dict) -> MistralConfig:
        """From a Hugging Face config.json (MistralForCausalLM); defaults are transformers' own."""
        if cfg.get("hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {cfg['hidden_act']!r} is not supported (only silu)")
        if cfg.get("tie_word_embeddings", False):
            raise ValueError("tie_word_embeddings=true is not supported: Mistral keeps a separate lm_head")
        if cfg.get("layer_types") is not None:
            raise ValueError("per-layer attention types (layer_types) are not supported")
        # transformers 5 nests RoPE settings in rope_parameters; 4.x and the hub configs use rope_theta.
        rope = cfg.get("rope_parameters") or {}
        if rope.get("rope_type", "default") != "default" or cfg.get("rope_scaling"):
            raise ValueError(f"RoPE scaling {rope or cfg.get('rope_scaling')} is not supported")
        theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
        dim, n_heads = _need(cfg, "hidden_size"), _need(cfg, "num_attention_heads")
        return cls(
            dim=dim,
            n_layers=_need(cfg, "num_hidden_layers"),
            n_heads=n_heads,
            n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
            head_dim=cfg.get("head_dim") or dim // n_heads,
            hidden_dim=_need(cfg, "intermediate_size"),
            vocab_size=_need(cfg, "vocab_size"),
            norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            # An absent key means transformers' default window, 4096; null means full attention.
            sliding_window=_window(cfg.get("sliding_window", 4096)),
        )

    @classmethod
    def from_native(cls, params: dict) -> MistralConfig:
        """From a native params.json (mistral-inference)."""
        if params.get("moe"):
            raise ValueError("mixture-of-experts checkpoints (moe) are not supported")
        window = _window(params.get("sliding_window"))
        theta = params.get("rope_theta")
        if theta is None:
            # Only Mistral-7B-v0.1 omits rope_theta, and it is the release with a window: it was trained
            # with 10000. Later releases without the key default to 1e6 as in mistral-inference.
            theta = 10000.0 if window is not None else 1e6
        dim, n_heads = _need(params, "dim"), _need(params, "n_heads")
        return cls(
            dim=dim,
            n_layers=_need(params, "n_layers"),
            n_heads=n_heads,
            n_kv_heads=params.get("n_kv_heads") or n_heads,
            head_dim=params.get("head_dim") or dim // n_heads,
            hidden_dim=_need(params, "hidden_dim"),
            vocab_size=_need(params, "vocab_size"),
            norm_eps=float(params.get("norm_eps", 1e-5)),
            rope_theta=float(theta),
            sliding_window=window,
        )


def _need(cfg: dict, key: str) -> int:
    if not isinstance(cfg.get(key), int):
        raise ValueError(f"missing or non-integer {key!r}")
    return cfg[key]


def _window(value: object) -> int | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError(f"sliding_window must be an int or null, got {value!r}")


# ----------------------------------------------------------------------------------------- layers


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in fp32 so bf16 activations do not lose the mean square.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos/sin tables (rows of `positions`, 1, T, head_dim) in fp32 for the rotate-half layout."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float, device=positions.device) / head_dim
    inv_freq = 1.0 / (theta**exponents)
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, T, D) by the tables; dimension i pairs with i + D/2. Computed in fp32."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (xf * cos + rotated * sin).type_as(x)


@dataclass
class AttnBlock:
    """One SDPA call: a slice of the chunk's queries, the chunk keys it sees, maybe the cache's keys."""

    queries: slice
    keys: slice
    with_cache: bool
    mask: Tensor | None  # additive (rows, 1, queries, keys); None: all visible, or causal if `causal`
    causal: bool = False


@dataclass
class AttnPlan:
    """How every layer attends for one forward call; built once, shared by all layers."""

    blocks: list[AttnBlock]
    cache_slots: int = 0  # buffer prefix the attention reads (the slots that can be filled)
    write_slots: Tensor | None = None  # (B, n): buffer slots receiving the chunk's last n keys
    # The same slots as (offset in those n keys, first slot, count) runs, when every row uses the same
    # slots: plain slice copies then replace the slower scattered write.
    write_runs: list[tuple[int, int, int]] | None = None
    write_first: bool = False  # single-token decode: store the key, then attend over the buffer
    # Queries start at this chunk index: the last layer of a last_only prefill needs only the final
    # position's output (every position's keys and values still go to the cache).
    first_query: int = 0


class Attention(nn.Module):
    def __init__(self, cfg: MistralConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(
        self, x: Tensor, rope: tuple[Tensor, Tensor], plan: AttnPlan, kv: tuple[Tensor, Tensor] | None
    ) -> Tensor:
        B, T, _ = x.shape
        fq = plan.first_query
        q = self.wq(x[:, fq:]).view(B, T - fq, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = rope
        q, k = apply_rope(q, cos[:, :, fq:], sin[:, :, fq:]), apply_rope(k, cos, sin)

        if kv is not None and plan.write_first:
            _store(kv, k, v, plan)
        outs = []
        for blk in plan.blocks:
            keys, values = k[:, :, blk.keys], v[:, :, blk.keys]
            if blk.with_cache:
                ck, cv = kv[0][:, :, : plan.cache_slots], kv[1][:, :, : plan.cache_slots]
                keys = torch.cat((ck, keys), dim=2) if keys.shape[2] else ck
                values = torch.cat((cv, values), dim=2) if values.shape[2] else cv
            qs = q[:, :, blk.queries]
            outs.append(
                F.scaled_dot_product_attention(
                    qs, keys, values, attn_mask=blk.mask, is_causal=blk.causal, enable_gqa=True
                )
            )
        if kv is not None and not plan.write_first:
            # After attending: in a chunk, later keys would overwrite slots earlier queries still see.
            n = plan.write_slots.shape[1]
            _store(kv, k[:, :, T - n :], v[:, :, T - n :], plan)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        return self.wo(out.transpose(1, 2).reshape(B, T - fq, -1))


def _store(kv: tuple[Tensor, Tensor], k: Tensor, v: Tensor, plan: AttnPlan) -> None:
    """Write (B, kv_heads, n, D) keys/values into the plan's buffer slots."""
    if plan.write_runs is not None:
        for src, dst, count in plan.write_runs:
            kv[0][:, :, dst : dst + count] = k[:, :, src : src + count]
            kv[1][:, :, dst : dst + count] = v[:, :, src : src + count]
        return
    slots = plan.write_slots  # rows at different positions: each row its own slots
    rows = torch.arange(k.shape[0], device=slots.device)[:, None]
    kv[0][rows, :, slots] = k.transpose(1, 2)
    kv[1][rows, :, slots] = v.transpose(1, 2)


class FeedForward(nn.Module):
    def __init__(self, cfg: MistralConfig) -> None:
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)  # gate
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)  # down
        self.w3 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)  # up

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: MistralConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attention = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(
        self, x: Tensor, rope: tuple[Tensor, Tensor], plan: AttnPlan, kv: tuple[Tensor, Tensor] | None
    ) -> Tensor:
        x = x[:, plan.first_query :] + self.attention(self.attention_norm(x), rope, plan, kv)
        return x + self.feed_forward(self.ffn_norm(x))


# ----------------------------------------------------------------------------------------- cache


class KVCache:
    """Rolling key/value buffers for every layer of one batch.

    k[i], v[i]: (B, n_kv_heads, slots, head_dim); the key of position p sits in slot p mod W (slot p
    without a window). slot_pos (B, slots) records which absolute position each slot holds (-1: empty)
    and lengths (B,) how many tokens each row has consumed. Buffers grow on demand up to W slots.
    Bookkeeping tensors stay on the CPU: they are tiny and the plan needs them on the host.
    """

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        head_dim: int,
        window: int | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.window = window
        shape = (batch_size, n_kv_heads, 0, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.slot_pos = torch.full((batch_size, 0), -1, dtype=torch.long)
        self.lengths = torch.zeros(batch_size, dtype=torch.long)

    @property
    def batch_size(self) -> int:
        return self.lengths.shape[0]

    @property
    def slots(self) -> int:
        return self.slot_pos.shape[1]

    def nbytes(self) -> int:
        """Bytes held by the key/value buffers."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def reserve(self, n_slots: int) -> None:
        """Make room for n_slots slots (never more than the window), growing in coarse steps."""
        if self.window is not None:
            n_slots = min(n_slots, self.window)
        if n_slots <= self.slots:
            return
        # Grow by an eighth at least: a decode step reads every slot anyway, so copying the buffer once
        # per slots/8 steps adds under 1/8 to that traffic, and the unused tail stays small.
        new = max(n_slots, self.slots + self.slots // 8)
        new = -(-new // CACHE_GROWTH) * CACHE_GROWTH
        if self.window is not None:
            new = min(new, self.window)
        extra = new - self.slots
        self.k = [_pad_slots(t, extra) for t in self.k]
        self.v = [_pad_slots(t, extra) for t in self.v]
        self.slot_pos = F.pad(self.slot_pos, (0, extra), value=-1)

    def select(self, index: Sequence[int] | Tensor) -> KVCache:
        """A new cache holding rows `index`, in that order (rows may repeat, e.g. to fork samples)."""
        index = torch.as_tensor(index, dtype=torch.long).cpu()
        dev_index = index.to(self.k[0].device) if self.k else index
        out = copy.copy(self)
        out.k = [t.index_select(0, dev_index) for t in self.k]
        out.v = [t.index_select(0, dev_index) for t in self.v]
        out.slot_pos = self.slot_pos.index_select(0, index)
        out.lengths = self.lengths.index_select(0, index)
        return out

    @classmethod
    def stack(cls, caches: Sequence[KVCache]) -> KVCache:
        """Concatenate the rows of several caches (e.g. prompts prefilled separately) into one batch."""
        if not caches:
            raise ValueError("stack needs at least one cache")
        first = caches[0]
        if any(c.window != first.window or len(c.k) != len(first.k) for c in caches):
            raise ValueError("caches of different models cannot be stacked")
        slots = max(c.slots for c in caches)
        out = cls.__new__(cls)
        out.window = first.window
        layers = range(len(first.k))
        out.k = [torch.cat([_pad_slots(c.k[i], slots - c.slots) for c in caches]) for i in layers]
        out.v = [torch.cat([_pad_slots(c.v[i], slots - c.slots) for c in caches]) for i in layers]
        out.slot_pos = torch.cat([F.pad(c.slot_pos, (0, slots - c.slots), value=-1) for c in caches])
        out.lengths = torch.cat([c.lengths for c in caches])
        return out


def _pad_slots(t: Tensor, extra: int) -> Tensor:
    return t if extra == 0 else F.pad(t, (0, 0, 0, extra))


# ----------------------------------------------------------------------------------------- model


def _visible(q_pos: Tensor, k_pos: Tensor, window: int | None) -> Tensor:
    """Boolean (rows, 1, Tq, Tk): key k_pos (-1 = empty slot) is visible to query q_pos."""
    q, k = q_pos[:, None, :, None], k_pos[:, None, None, :]
    vis = (k >= 0) & (k <= q)
    if window is not None:
        vis &= k > q - window
    return vis


def _additive(visible: Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    # A float mask runs faster than a boolean one in the CPU SDPA kernels.
    mask = torch.zeros(visible.shape, dtype=dtype)
    return mask.masked_fill_(~visible, float("-inf")).to(device)


class Mistral(nn.Module):
    """The decoder. `model(ids)` for a full forward, `forward_cached(ids, cache)` to continue a cache."""

    def __init__(self, cfg: MistralConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)

    @property
    def device(self) -> torch.device:
        return self.tok_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.tok_embeddings.weight.dtype

    def new_cache(self, batch_size: int) -> KVCache:
        c = self.config
        shape = (c.n_layers, batch_size, c.n_kv_heads, c.head_dim)
        return KVCache(*shape, window=c.sliding_window, dtype=self.dtype, device=self.device)

    def forward(self, input_ids: Tensor, last_only: bool = False) -> Tensor:
        """Float32 logits (B, T, V) (T=1 if last_only) for sequences from position 0, no cache."""
        positions = torch.arange(input_ids.shape[1])[None]  # rows identical: masks broadcast
        plan = AttnPlan(blocks=self._blocks(positions, None))
        last = self._last_query_plan(plan, positions, None) if last_only else plan
        return self._run(input_ids, positions, plan, last, None)

    def forward_cached(self, input_ids: Tensor, cache: KVCache, last_only: bool = False) -> Tensor:
        """Float32 logits (B, T|1, V) for T new tokens per row after what `cache` holds; updates it."""
        B, T = input_ids.shape
        if B != cache.batch_size:
            raise ValueError(f"batch of {B} rows for a cache of {cache.batch_size}")
        W = self.config.sliding_window
        positions = cache.lengths[:, None] + torch.arange(T)
        end = int(positions.max()) + 1
        cache.reserve(end)
        # The chunk's last min(T, W) keys go to the buffer (earlier ones would be overwritten anyway).
        n = T if W is None else min(T, W)
        written = positions[:, T - n :]
        slots = written if W is None else written % W

        cache_pos = None
        if T == 1:
            cache.slot_pos[torch.arange(B)[:, None], slots] = written
            plan = AttnPlan(blocks=[], cache_slots=min(cache.slots, end), write_first=True)
            visible = _visible(positions, cache.slot_pos[:, : plan.cache_slots], W)
            mask = None if bool(visible.all()) else _additive(visible, self.dtype, self.device)
            plan.blocks.append(AttnBlock(slice(0, 1), slice(0, 0), with_cache=True, mask=mask))
        else:
            held = int(cache.lengths.max())
            plan = AttnPlan(blocks=[], cache_slots=min(cache.slots, held))
            cache_pos = cache.slot_pos[:, : plan.cache_slots] if held else None
            plan.blocks = self._blocks(positions, cache_pos)
        plan.write_slots = slots.to(self.device)
        if bool((cache.lengths == cache.lengths[0]).all()):
            # Consecutive positions: one run of slots, or two where the rolling buffer wraps around.
            first = int(slots[0, 0])
            wrap = n if W is None else min(n, W - first)
            plan.write_runs = [(0, first, wrap)] + ([(wrap, 0, n - wrap)] if wrap < n else [])

        last = self._last_query_plan(plan, positions, cache_pos) if last_only and T > 1 else plan
        logits = self._run(input_ids, positions, plan, last, cache)
        if T > 1:
            cache.slot_pos[torch.arange(B)[:, None], slots] = written
        cache.lengths = cache.lengths + T
        return logits

    def _last_query_plan(self, plan: AttnPlan, positions: Tensor, cache_pos: Tensor | None) -> AttnPlan:
        """The plan for the last layer when only the last position's logits are wanted."""
        T = positions.shape[1]
        return replace(plan, blocks=self._blocks(positions, cache_pos, first_query=T - 1), first_query=T - 1)

    def _blocks(self, positions: Tensor, cache_pos: Tensor | None, first_query: int = 0) -> list[AttnBlock]:
        """Query blocks for a chunk at `positions` (rows, T), following a cache at `cache_pos` or none;
        queries from chunk index `first_query` on."""
        W = self.config.sliding_window
        T = positions.shape[1]
        size = T if W is None else min(W, QUERY_BLOCK)
        blocks, masks = [], {}
        for start in range(first_query, T, size):
            stop = min(start + size, T)
            queries = slice(start - first_query, stop - first_query)
            first_key = 0 if W is None else max(0, start - W + 1)
            # The cache matters only to queries whose window reaches back before the chunk.
            with_cache = cache_pos is not None and (W is None or start < W - 1)
            if not with_cache and first_key == start:
                # Keys are exactly these queries' positions, all within one window: plain causal.
                blocks.append(AttnBlock(queries, slice(start, stop), False, None, causal=True))
                continue
            if with_cache:
                k_pos = torch.cat((cache_pos, positions[:, first_key:stop]), dim=1)
                mask = _additive(_visible(positions[:, start:stop], k_pos, W), self.dtype, self.device)
            else:
                # Within the chunk only offsets matter: one mask serves every row and every full block.
                shape = (start - first_key, stop - first_key)
                if shape not in masks:
                    rel = torch.arange(shape[1])[None]
                    masks[shape] = _additive(_visible(rel[:, shape[0] :], rel, W), self.dtype, self.device)
                mask = masks[shape]
            blocks.append(AttnBlock(queries, slice(first_key, stop), with_cache, mask))
        return blocks

    def _run(
        self, input_ids: Tensor, positions: Tensor, plan: AttnPlan, last: AttnPlan, cache: KVCache | None
    ) -> Tensor:
        """Embed, run the layers (the last one with `last`), project to the vocabulary."""
        cfg = self.config
        rope = rope_cos_sin(positions.to(self.device), cfg.head_dim, cfg.rope_theta)
        x = self.tok_embeddings(input_ids.to(self.device))
        for i, layer in enumerate(self.layers):
            layer_plan = last if i == len(self.layers) - 1 else plan
            x = layer(x, rope, layer_plan, None if cache is None else (cache.k[i], cache.v[i]))
        return self.output(self.norm(x)).float()


# ----------------------------------------------------------------------------------------- loading

_HF_TOP = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
_HF_LAYER = {
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
_HF_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight")


def _rename_hf(name: str) -> str | None:
    if name.endswith("rotary_emb.inv_freq"):  # a buffer some old exports saved; recomputed here
        return None
    if name in _HF_TOP:
        return _HF_TOP[name]
    m = _HF_LAYER_RE.fullmatch(name)
    if m and m.group(2) in _HF_LAYER:
        return f"layers.{m.group(1)}.{_HF_LAYER[m.group(2)]}.weight"
    return name  # unknown: load_weights reports it as unexpected


def _rename_native(name: str) -> str | None:
    return None if name == "rope.freqs" else name


def _interleaved_to_half(w: Tensor, n_heads: int) -> Tensor:
    """Permute wq/wk rows from native interleaved RoPE pairs (2i, 2i+1) to rotate-half pairs (i, i+D/2)."""
    rows, dim = w.shape
    head_dim = rows // n_heads
    return w.view(n_heads, head_dim // 2, 2, dim).transpose(1, 2).reshape(rows, dim)


def load_mistral(
    path: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device | None = None
) -> Mistral:
    """Load a Mistral checkpoint in eval mode, without gradients: HF (config.json + safetensors, single
    or sharded) or native (params.json + consolidated.safetensors).

    dtype defaults to the dtype the weights are stored in; device to CUDA when present, else CPU.
    """
    from evalkit.models.checkpoint import CheckpointError, load_weights, read_config, stored_dtype

    fmt, raw = read_config(path)
    source = os.path.join(os.fspath(path), "config.json" if fmt == "hf" else "params.json")
    try:
        cfg = MistralConfig.from_hf(raw) if fmt == "hf" else MistralConfig.from_native(raw)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from e
    dtype = dtype or stored_dtype(path)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))

    with torch.device("meta"):  # shapes only: the real tensors come straight from the file
        model = Mistral(cfg)
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}

    def transform(name: str, w: Tensor) -> Tensor:
        if fmt == "native" and tuple(w.shape) == expected[name]:
            if name.endswith("attention.wq.weight"):
                return _interleaved_to_half(w, cfg.n_heads)
            if name.endswith("attention.wk.weight"):
                return _interleaved_to_half(w, cfg.n_kv_heads)
        return w

    rename = _rename_hf if fmt == "hf" else _rename_native
    state = load_weights(path, expected, rename=rename, dtype=dtype, device=device, transform=transform)
    model.load_state_dict(state, assign=True)
    return model.requires_grad_(False).eval()


__all__ = ["KVCache", "Mistral", "MistralConfig", "load_mistral"]
