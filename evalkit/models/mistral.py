"""A Mistral-architecture decoder (Mistral 7B, Mathstral 7B) in plain PyTorch.

Pre-norm transformer: RMSNorm, rotary position embeddings, grouped-query attention with an optional
sliding window, SiLU-gated MLP, untied input and output embeddings.

Sliding window W: the query at position q sees the keys at positions q-W < k <= q (W keys including
its own); no window means full causal attention.

KV cache: a rolling buffer per layer. The key of position p lives in slot p mod W, with RoPE already
applied at its absolute position, so the buffer never holds more than W positions whatever the
context length (KVCache works an example). Every batch row keeps its own position, which lets caches of
prompts prefilled separately (different lengths) be stacked into one batch. Without a window the buffer
simply grows.

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

from evalkit.models.checkpoint import CheckpointError, load_weights, read_config, stored_dtype
from evalkit.models.logits import vocab_logits

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
    """One SDPA call: a slice of the call's queries, the new keys it reads, maybe the cache's keys first."""

    queries: slice
    keys: slice  # of the chunk's new keys (empty when they are in the cache already)
    with_cache: bool
    mask: Tensor | None  # boolean (rows or 1, 1, queries, keys), True where visible; None: plain causal


@dataclass
class AttnPlan:
    """How every layer attends in one call; built once per call, shared by all layers."""

    blocks: list[AttnBlock]
    cache_slots: int = 0  # buffer prefix the blocks with_cache read
    write_slots: Tensor | None = None  # (B, n): buffer slots receiving the chunk's last n keys
    write_first: bool = False  # one token: its key is stored first and read from the buffer
    # Queries start at this chunk index: the last layer of a last_only call needs only the final position's
    # output (every position's keys and values still go to the cache).
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
            _store(kv, k, v, plan.write_slots)
        outs = []
        for blk in plan.blocks:
            keys, values = k[:, :, blk.keys], v[:, :, blk.keys]
            if blk.with_cache:
                ck, cv = kv[0][:, :, : plan.cache_slots], kv[1][:, :, : plan.cache_slots]
                keys = torch.cat((ck, keys), dim=2) if keys.shape[2] else ck
                values = torch.cat((cv, values), dim=2) if values.shape[2] else cv
            outs.append(
                F.scaled_dot_product_attention(
                    q[:, :, blk.queries], keys, values, attn_mask=blk.mask, is_causal=blk.mask is None,
                    enable_gqa=True,
                )
            )
        if kv is not None and not plan.write_first:
            # After attending: in a chunk, later keys would overwrite slots earlier queries still see.
            n = plan.write_slots.shape[1]
            _store(kv, k[:, :, T - n :], v[:, :, T - n :], plan.write_slots)
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        return self.wo(out.transpose(1, 2).reshape(B, T - fq, -1))


def _store(kv: tuple[Tensor, Tensor], k: Tensor, v: Tensor, slots: Tensor) -> None:
    """Write keys/values (B, kv_heads, n, D) into buffer slots (B, n), each row its own slots."""
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
    """Rolling key/value buffers for every layer of one batch, with each row's positions.

    k[i], v[i] (B, n_kv_heads, slots, head_dim): keys (RoPE applied at their absolute position) and values.
    slot_pos (B, slots): the position each slot holds, -1 if none; lengths (B,): tokens each row has
    consumed. All live on the buffers' device, so a decode step never reads them on the host.

    The key of position p sits in slot p mod `slots`, where `slots` is W or, before the buffer has
    grown to W (and always without a window), more than any position it holds: so p mod slots is
    p mod W, or simply p. Worked example, W = 4, two rows prefilled separately and stacked:

        row 0: prompt of 6 tokens, positions 0-5. The chunk is longer than W: only its last W keys
               are stored, positions 2 3 4 5 -> slots 2 3 0 1        slot_pos [4 5 2 3]
               decode position 6 -> slot 2 (position 2 left the window: 6 sees 3-6)
                                                                    slot_pos [4 5 6 3]
        row 1: prompt of 2 tokens -> slots 0 1                      slot_pos [0 1 -1 -1]
               decode position 2 -> slot 2                          slot_pos [0 1 2 -1]

    Each query reads the whole buffer with a mask from slot_pos (empty and out-of-window slots hidden),
    so rows at different positions decode together.
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
        self.slot_pos = torch.full((batch_size, 0), -1, dtype=torch.long, device=device)
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)

    @property
    def batch_size(self) -> int:
        return self.lengths.shape[0]

    @property
    def slots(self) -> int:
        return self.slot_pos.shape[1]

    def nbytes(self) -> int:
        """Bytes held by the key/value buffers."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def reserve(self, n_positions: int) -> None:
        """Make room for positions 0 .. n_positions-1 (a window needs no more than W slots), growing in
        coarse steps. Moves every slot it grows: call it before decoding, not between captured steps."""
        if self.window is not None:
            n_positions = min(n_positions, self.window)
        if n_positions <= self.slots:
            return
        # Grow by an eighth at least: a decode step reads every slot anyway, so copying the buffer once
        # per slots/8 steps adds under 1/8 to that traffic, and the unused tail stays small.
        new = max(n_positions, self.slots + self.slots // 8)
        new = -(-new // CACHE_GROWTH) * CACHE_GROWTH
        if self.window is not None:
            new = min(new, self.window)
        extra = new - self.slots
        self.k = [_pad_slots(t, extra) for t in self.k]
        self.v = [_pad_slots(t, extra) for t in self.v]
        self.slot_pos = F.pad(self.slot_pos, (0, extra), value=-1)

    def select(self, index: Sequence[int] | Tensor) -> KVCache:
        """A new cache holding rows `index`, in that order (rows may repeat, e.g. to fork samples)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.lengths.device)
        out = copy.copy(self)
        out.k = [t.index_select(0, index) for t in self.k]
        out.v = [t.index_select(0, index) for t in self.v]
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

    def head(self, n: int) -> KVCache:
        """A view of the first n rows: decoding it updates this cache."""
        out = copy.copy(self)
        out.k, out.v = [t[:n] for t in self.k], [t[:n] for t in self.v]
        out.slot_pos, out.lengths = self.slot_pos[:n], self.lengths[:n]
        return out

    def assign(self, index: Tensor, source: KVCache) -> None:
        """Rows `index` become copies of the rows of `source` (in order; a one-row source fills them all).

        source may have fewer slots (a prompt prefilled alone): the rest of those rows is marked empty.
        """
        if source.slots > self.slots:
            raise ValueError(f"a cache of {source.slots} slots does not fit in one of {self.slots}")
        for dst, src in zip(self.k + self.v, source.k + source.v, strict=True):
            dst[index, :, : source.slots] = src
        self.slot_pos[index] = F.pad(source.slot_pos, (0, self.slots - source.slots), value=-1)
        self.lengths[index] = source.lengths


def _pad_slots(t: Tensor, extra: int) -> Tensor:
    return t if extra == 0 else F.pad(t, (0, 0, 0, extra))


# ----------------------------------------------------------------------------------------- model


def _visible(q_pos: Tensor, k_pos: Tensor, window: int | None) -> Tensor:
    """Boolean mask (rows, 1, Tq, Tk): key position k_pos (-1: empty slot) is visible to query q_pos."""
    q, k = q_pos[:, None, :, None], k_pos[:, None, None, :]
    visible = (k >= 0) & (k <= q)
    if window is not None:
        visible &= k > q - window
    return visible


class Mistral(nn.Module):
    """The decoder. `model(ids)` for a full forward, `forward_cached(ids, cache)` to continue a cache,
    `decode_step(tokens, cache)` for one token per row in fixed shapes (what generation runs)."""

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

    def new_cache(self, batch_size: int, length: int = 0) -> KVCache:
        """An empty cache for `batch_size` rows, with room for `length` positions per row up front."""
        c = self.config
        shape = (c.n_layers, batch_size, c.n_kv_heads, c.head_dim)
        cache = KVCache(*shape, window=c.sliding_window, dtype=self.dtype, device=self.device)
        cache.reserve(length)
        return cache

    def forward(self, input_ids: Tensor, last_only: bool = False) -> Tensor:
        """Float32 logits (B, T, V) (T=1 if last_only) for sequences from position 0, no cache."""
        positions = torch.arange(input_ids.shape[1], device=self.device)[None]  # rows identical: masks broadcast
        plan = AttnPlan(self._blocks(positions, None))
        return self._run(input_ids, positions, plan, self._last_query(plan, positions, None, last_only), None)

    def forward_cached(self, input_ids: Tensor, cache: KVCache, last_only: bool = False) -> Tensor:
        """Float32 logits (B, T|1, V) for T new tokens per row after what `cache` holds; updates it.

        The plan follows each row's position, read once from the cache. The chunk's last min(T, W) keys go
        to the buffer (earlier ones would be overwritten by later ones anyway), after the chunk attended.
        """
        B, T = input_ids.shape
        if B != cache.batch_size:
            raise ValueError(f"batch of {B} rows for a cache of {cache.batch_size}")
        lengths = cache.lengths.cpu()
        cache.reserve(int(lengths.max()) + T)
        if T == 1:
            return self.decode_step(input_ids[:, 0], cache)[:, None]
        W = self.config.sliding_window
        positions = (lengths[:, None] + torch.arange(T)).to(self.device)
        n = T if W is None else min(T, W)
        written = positions[:, T - n :]
        held = int(lengths.max())
        plan = AttnPlan([], cache_slots=min(cache.slots, held), write_slots=written % cache.slots)
        cache_pos = cache.slot_pos[:, : plan.cache_slots] if held else None
        plan.blocks = self._blocks(positions, cache_pos)
        logits = self._run(input_ids, positions, plan, self._last_query(plan, positions, cache_pos, last_only), cache)
        cache.slot_pos.scatter_(1, plan.write_slots, written)
        cache.lengths += T
        return logits

    def decode_step(self, tokens: Tensor, cache: KVCache) -> Tensor:
        """One token per row, tokens (B,) -> float32 logits (B, V), each row at its own position; updates
        the cache, which must have room (new_cache(B, length) or reserve).

        Fixed shapes and no host reads (the plan comes from the cache's device tensors): the step can be
        captured in a CUDA graph. Every query reads the whole buffer, masked.
        """
        positions = cache.lengths[:, None]  # (B, 1)
        slots = positions % cache.slots  # see KVCache: slot p mod W, or p
        cache.slot_pos.scatter_(1, slots, positions)
        plan = AttnPlan(self._blocks(positions, cache.slot_pos), cache.slots, write_slots=slots, write_first=True)
        logits = self._run(tokens[:, None], positions, plan, plan, cache)[:, 0]
        cache.lengths += 1
        return logits

    def _last_query(self, plan: AttnPlan, positions: Tensor, cache_pos: Tensor | None, last_only: bool) -> AttnPlan:
        """The last layer's plan: when only the last position's logits are wanted, its other queries go."""
        T = positions.shape[1]
        if not last_only or T == 1:
            return plan
        return replace(plan, blocks=self._blocks(positions, cache_pos, first_query=T - 1), first_query=T - 1)

    def _blocks(self, positions: Tensor, cache_pos: Tensor | None, first_query: int = 0) -> list[AttnBlock]:
        """Query blocks for a chunk at `positions` (rows, T), after a cache whose slots hold `cache_pos`
        (rows, slots) or no cache; queries from chunk index `first_query` on.

        A single token (decode) has its key stored first (cache_pos includes it): it reads the buffer
        alone. A longer chunk runs in blocks of QUERY_BLOCK queries, each reading only the keys its
        window reaches: cost linear in T beyond W, and no T x T mask.
        """
        W = self.config.sliding_window
        T = positions.shape[1]
        if T == 1 and cache_pos is not None:
            return [AttnBlock(slice(0, 1), slice(0, 0), True, _visible(positions, cache_pos, W))]
        size = T if W is None else min(W, QUERY_BLOCK)
        blocks = []
        for start in range(first_query, T, size):
            stop = min(start + size, T)
            queries = slice(start - first_query, stop - first_query)
            first_key = 0 if W is None else max(0, start - W + 1)
            # The cache matters only to queries whose window reaches back before the chunk.
            with_cache = cache_pos is not None and (W is None or start < W - 1)
            if not with_cache and first_key == start:
                # Keys are exactly these queries' positions, all within one window: plain causal.
                blocks.append(AttnBlock(queries, slice(start, stop), False, None))
                continue
            if with_cache:
                k_pos = torch.cat((cache_pos, positions[:, first_key:stop]), dim=1)
                mask = _visible(positions[:, start:stop], k_pos, W)
            else:
                # Within the chunk only offsets matter: one mask row serves every batch row.
                offsets = torch.arange(stop - first_key, device=positions.device)[None]
                mask = _visible(offsets[:, start - first_key :], offsets, W)
            blocks.append(AttnBlock(queries, slice(first_key, stop), with_cache, mask))
        return blocks

    def _run(
        self, input_ids: Tensor, positions: Tensor, plan: AttnPlan, last: AttnPlan, cache: KVCache | None
    ) -> Tensor:
        """Embed, run the layers (the last one with `last`), project the last layer's outputs to the vocabulary."""
        cfg = self.config
        rope = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta)
        x = self.tok_embeddings(input_ids)
        for i, layer in enumerate(self.layers):
            layer_plan = last if i == len(self.layers) - 1 else plan
            x = layer(x, rope, layer_plan, None if cache is None else (cache.k[i], cache.v[i]))
        return vocab_logits(self.norm(x), self.output.weight)


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
