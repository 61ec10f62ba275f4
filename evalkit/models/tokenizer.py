"""The real Mistral SentencePiece tokenizers, shipped inside the mistral-common wheel (no download).

v3 (32768 pieces) serves Codestral Mamba, Mathstral and Mistral 7B v0.3; v1 (32000 pieces) serves
Mistral 7B v0.1. Special ids come from the tokenizer (bos 1, eos 2), never from config.json, whose
Codestral copy says 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

# Prompt tokens decoded in front of a continuation: SentencePiece drops the leading space of the
# first piece it decodes, so a continuation decoded alone would lose its leading space.
_ANCHOR_TOKENS = 8


class MistralTokenizer:
    """Encode text with bos, decode ids to text; `version` is "v1" or "v3"."""

    def __init__(self, version: str) -> None:
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer as _Mistral

        loaders = {"v1": _Mistral.v1, "v3": _Mistral.v3}
        if version not in loaders:
            raise ValueError(f"unknown tokenizer version {version!r} (have {', '.join(loaders)})")
        self.version = version
        self._sp = loaders[version]().instruct_tokenizer.tokenizer
        self.vocab_size: int = self._sp.n_words
        self.bos_id: int = self._sp.bos_id
        self.eos_id: int = self._sp.eos_id

    def encode(self, text: str, bos: bool = True) -> list[int]:
        return self._sp.encode(text, bos=bos, eos=False)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids; special tokens (bos, eos, control tokens) are dropped."""
        return self._sp.decode(list(ids))

    def decode_continuation(self, prompt_ids: Sequence[int], new_ids: Sequence[int]) -> str:
        """Text of new_ids as it reads after the prompt, leading space included."""
        anchor = [i for i in prompt_ids[-_ANCHOR_TOKENS:] if i not in (self.bos_id, self.eos_id)]
        if not anchor:
            return self.decode(new_ids)
        head = self.decode(anchor)
        full = self.decode([*anchor, *new_ids])
        if full.startswith(head):
            return full[len(head) :]
        head = self.decode(prompt_ids)  # the anchor cut a multi-token character: decode it all
        return self.decode([*prompt_ids, *new_ids])[len(head) :]


@cache
def tokenizer_for_vocab(vocab_size: int) -> MistralTokenizer:
    """The tokenizer a checkpoint with this embedding size was trained with."""
    if vocab_size == 32768:
        return MistralTokenizer("v3")
    if vocab_size == 32000:
        return MistralTokenizer("v1")
    raise ValueError(f"no known Mistral tokenizer has {vocab_size} tokens (v1: 32000, v3: 32768)")
