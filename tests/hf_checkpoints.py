"""Tiny random Hugging Face checkpoints for the hf: backend, each folder with the tokenizer that goes with it.

- Mistral (sliding window) and Mamba-2 with the real Mistral v3 tokenizer, as mistral-common ships it, loaded
  by transformers through `tokenizer_config.json: {"tokenizer_class": "MistralCommonBackend"}`;
- Llama with the v1 SentencePiece model converted by transformers into a LlamaTokenizer (the SentencePiece
  leading-space trap lives there);
- GPT-2 with a byte-level BPE tokenizer trained here with the `tokenizers` library.

Weights are drawn larger than the default initialisation (std 0.02 leaves the logits nearly flat), so that
greedy choices are clear and sampling is not uniform.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import transformers
from mamba2_checkpoints import oracle, save_hf

from evalkit.backends.mistral_tokenizers import shipped_file, write_autotokenizer_files

WINDOW = 16  # shorter than most test prompts plus their completions


def _spread(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.15)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            else:  # norm weights
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
    return model.eval()


def tiny_mistral(directory: Path, seed: int = 0) -> Path:
    """MistralForCausalLM with GQA and a sliding window of WINDOW tokens, v3 vocabulary and tokenizer."""
    cfg = transformers.MistralConfig(
        vocab_size=32768, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, sliding_window=WINDOW, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    _spread(transformers.MistralForCausalLM(cfg), seed).save_pretrained(directory)
    return write_autotokenizer_files(directory)


def tiny_mamba2(directory: Path, seed: int = 5) -> Path:
    """Mamba2ForCausalLM (the Codestral Mamba layout, shrunk), v3 vocabulary and tokenizer."""
    save_hf(oracle(seed=seed), directory)
    return write_autotokenizer_files(directory)


def sentencepiece_tokenizer(directory: Path) -> transformers.PreTrainedTokenizerBase:
    """The v1 SentencePiece model converted by transformers into a LlamaTokenizer, saved in `directory`."""
    raw = directory / "sp"
    raw.mkdir(parents=True, exist_ok=True)
    shutil.copy(shipped_file("v1"), raw / "tokenizer.model")
    tokenizer = transformers.LlamaTokenizer.from_pretrained(raw)
    shutil.rmtree(raw)
    tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_llama(directory: Path, seed: int = 2) -> Path:
    """LlamaForCausalLM with the v1 vocabulary and the SentencePiece LlamaTokenizer."""
    cfg = transformers.LlamaConfig(
        vocab_size=32000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )
    _spread(transformers.LlamaForCausalLM(cfg), seed).save_pretrained(directory)
    sentencepiece_tokenizer(directory)
    return directory


CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n    print(i * i)\n",
    "import numpy as np\n\nx = np.zeros((3, 4))\n",
    "SELECT name, age FROM users WHERE age > 30;\n",
    "The quick brown fox jumps over the lazy dog.\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n",
]


def bpe_tokenizer(directory: Path) -> transformers.PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer of 320 tokens trained on CORPUS, with <|endoftext|> as EOS, saved in `directory`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(CORPUS * 5, trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>")
    tokenizer.save_pretrained(directory)
    return tokenizer


def tiny_gpt2(directory: Path, seed: int = 3) -> Path:
    """GPT2LMHeadModel (learned positions, fused QKV) with the BPE tokenizer written beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = bpe_tokenizer(directory)
    cfg = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=64, n_layer=2, n_head=4,
                                  bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  tie_word_embeddings=False)
    _spread(transformers.GPT2LMHeadModel(cfg), seed).save_pretrained(directory)
    return directory


def bigram_llama(directory: Path, chain: list[int], vocab: int = 32000) -> Path:
    """A Llama whose next token depends only on the current one: after chain[i] it says chain[i + 1].

    The decoder layers add nothing (zero output projections), so the last hidden state is the current
    token's embedding, and each lm_head row of chain[i + 1] is chain[i]'s embedding. Tokens of `chain` must
    be distinct.
    """
    cfg = transformers.LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                                   tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        embed = torch.randn(vocab, 64, generator=gen)
        model.model.embed_tokens.weight.copy_(embed)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head = torch.zeros(vocab, 64)
        for a, b in zip(chain, chain[1:], strict=False):
            head[b] = 10 * embed[a]
        model.lm_head.weight.copy_(head)
    model.save_pretrained(directory)
    return directory
