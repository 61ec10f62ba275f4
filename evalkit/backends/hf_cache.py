"""Rows of transformers caches gathered into one batch, so prompts prefilled alone can decode together.

A transformers cache holds one sequence length for all its rows, so rows of different lengths share a cache
the way `generate` shares one for a left-padded batch: each row's tokens are right-aligned, the positions in
front of a shorter row hold zeros, and the 2-D attention mask marks them 0. The decoding step is then the one
`generate` runs for a left-padded batch (the model's own `prepare_inputs_for_generation`, position ids counted
per row), with one difference that makes it exact: no pad token ever went through the model. Each prompt was
prefilled alone, so what a row holds at its real positions is what it would hold decoding alone; the zeros
are masked out of every attention softmax (their weight is exactly 0), and recurrent layers (Mamba-2 conv and
SSM states) have no length at all, so their rows are simply stacked.

Layouts, for a batch whose longest row has `width` tokens and a row with `n` of them:

- full attention (`DynamicLayer`): keys/values (rows, heads, width, dim), the row's at [width - n, width);
- sliding window (`DynamicSlidingWindowLayer`, W): the last min(width, W - 1) positions of that same layout,
  and `cumulative_length` = width, which is what the mask code reads the window's offset from;
- recurrent (`LinearAttentionLayer`): conv and SSM states (rows, ...), no positions.

Caches with any other layer type (quantized, offloaded, static) cannot be regathered here; `stackable` says so,
and the backend then decodes only the samples of one prompt together (forked with `reorder_cache`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers.cache_utils import (
    Cache,
    DummyLayer,
    DynamicLayer,
    DynamicSlidingWindowLayer,
    LinearAttentionAndFullAttentionLayer,
    LinearAttentionAndSlidingWindowAttentionLayer,
    LinearAttentionLayer,
)

# Exact types: a subclass may hold tensors (an indexer, quantized blocks) this module would not carry over.
ATTENTION_LAYERS = (DynamicLayer, DynamicSlidingWindowLayer, LinearAttentionAndFullAttentionLayer,
                    LinearAttentionAndSlidingWindowAttentionLayer)
RECURRENT_LAYERS = (LinearAttentionLayer, LinearAttentionAndFullAttentionLayer,
                    LinearAttentionAndSlidingWindowAttentionLayer)
SLIDING_LAYERS = (DynamicSlidingWindowLayer, LinearAttentionAndSlidingWindowAttentionLayer)
STACKABLE_LAYERS = frozenset({*ATTENTION_LAYERS, *RECURRENT_LAYERS, DummyLayer})


def stackable(cache: Cache) -> bool:
    """Whether rows of this cache (and of caches like it) can be gathered into one batch."""
    return all(type(layer) in STACKABLE_LAYERS for layer in cache.layers)


@dataclass
class Rows:
    """A cache and the number of real tokens of each of its rows (right-aligned, `width` = the longest)."""

    cache: Cache
    lengths: list[int]

    @property
    def width(self) -> int:
        return max(self.lengths)

    def attention_mask(self, extra: int = 0) -> Tensor:
        """The 2-D mask (rows, width + extra): 1 on each row's real tokens and on `extra` new ones."""
        lengths = torch.tensor(self.lengths) + extra
        width = self.width + extra
        return (torch.arange(width)[None, :] >= (width - lengths)[:, None]).long()


def _fit(t: Tensor, size: int) -> Tensor:
    """Keep the last `size` positions (dim -2), or put zeros in front to reach `size`."""
    have = t.shape[-2]
    if have >= size:
        return t[..., have - size :, :]
    return torch.nn.functional.pad(t, (0, 0, size - have, 0))


def gather(parts: Sequence[tuple[Rows, Sequence[int]]]) -> Rows:
    """A NEW cache holding rows `index` of each part, in order (rows may repeat); the parts stay unchanged.

    With one part this works for any cache (a deep copy, then `reorder_cache`); several parts need
    `stackable` caches of the same model.
    """
    lengths = [rows.lengths[i] for rows, index in parts for i in index]
    if len(parts) == 1 and not stackable(parts[0][0].cache):
        rows, index = parts[0]
        cache = copy.deepcopy(rows.cache)
        cache.reorder_cache(torch.tensor(list(index), dtype=torch.long))
        return Rows(cache, lengths)
    if not all(stackable(rows.cache) for rows, _ in parts):
        raise ValueError("caches with layers other than dynamic, sliding-window or recurrent cannot be stacked")
    width = max(lengths)
    template = parts[0][0].cache
    layers = []
    for i, layer in enumerate(template.layers):
        sources = [(rows.cache.layers[i], torch.tensor(list(index), dtype=torch.long)) for rows, index in parts]
        new = copy.copy(layer)
        # Flags and per-state dicts are copied so that the new cache never writes into a part's.
        new.__dict__ = {k: dict(v) if isinstance(v, dict) else v for k, v in layer.__dict__.items()}
        if isinstance(layer, ATTENTION_LAYERS) and layer.is_initialized:
            size = width
            if isinstance(layer, SLIDING_LAYERS):
                size = min(width, layer.sliding_window - 1)
                new.cumulative_length = width
            device = layer.keys.device
            new.keys = torch.cat([_fit(src.keys[index.to(device)], size) for src, index in sources])
            new.values = torch.cat([_fit(src.values[index.to(device)], size) for src, index in sources])
        if isinstance(layer, RECURRENT_LAYERS):
            for state in ("conv_states", "recurrent_states"):
                held = getattr(layer, state)
                getattr(new, state).update({
                    k: torch.cat([getattr(src, state)[k][index.to(v.device)] for src, index in sources])
                    for k, v in held.items() if v is not None
                })
        layers.append(new)
    cache = copy.copy(template)
    cache.layers = layers
    return Rows(cache, lengths)
