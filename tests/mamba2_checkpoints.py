"""Tiny random Mamba-2 checkpoints for tests, written the way the real ones are.

transformers' Mamba2ForCausalLM (5.23.0, CPU, float32 torch path) is the numerical oracle: it makes the
random weights, saves the Hugging Face layout with save_pretrained, and the same tensors are re-saved in
the native (mistral-inference) layout: params.json plus consolidated.safetensors with "model." names and
a singular "embedding".
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

# The native params.json leaves the mixer sizes implicit (d_state 128, headdim 64, expand 2, d_conv 4,
# chunk 256), so a native checkpoint must use them; 4 heads in 2 groups keep n_groups > 1 meaningful.
NATIVE_SIZES = dict(hidden_size=128, num_hidden_layers=2, n_groups=2, vocab_size=32768)

# Off-default sizes with many chunks for fast numerical checks: 8 heads in 4 groups of 2.
SMALL_SIZES = dict(
    hidden_size=64, num_hidden_layers=2, state_size=16, head_dim=16, n_groups=4, chunk_size=16, vocab_size=256
)


def oracle(seed: int = 0, **sizes: int):
    """A transformers Mamba2ForCausalLM with random weights far from their (too regular) initial values."""
    from transformers import Mamba2Config, Mamba2ForCausalLM

    sizes = {**NATIVE_SIZES, **sizes}
    expand = sizes.get("expand", 2)
    head_dim = sizes.get("head_dim", 64)
    config = Mamba2Config(
        num_heads=expand * sizes["hidden_size"] // head_dim,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        **sizes,
    )
    torch.manual_seed(seed)
    model = Mamba2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith("A_log"):
                p.add_(0.5 * torch.randn_like(p))
            elif name.endswith("dt_bias"):
                p.add_(0.5 * torch.randn_like(p))
            elif name.endswith(".D"):
                p.copy_(torch.randn_like(p))
            elif name.endswith("conv1d.bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return model


def save_hf(model, directory: Path, max_shard_size: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, **kwargs)
    return directory


def save_native(model, directory: Path) -> Path:
    """params.json + consolidated.safetensors exactly as Mamba-Codestral-7B-v0.1 ships them."""
    cfg = model.config
    directory.mkdir(parents=True, exist_ok=True)
    params = {
        "dim": cfg.hidden_size,
        "n_layers": cfg.num_hidden_layers,
        "vocab_size": cfg.vocab_size,
        "n_groups": cfg.n_groups,
        "rms_norm": True,
        "residual_in_fp32": True,
        "fused_add_norm": True,
        "pad_vocab_size_multiple": 1,
        "tie_embeddings": False,
        "model_type": "mamba",
    }
    (directory / "params.json").write_text(json.dumps(params, indent=2))
    tensors = {
        "model." + name.replace("backbone.embeddings.", "backbone.embedding."): t.detach()
        .clone()
        .contiguous()
        for name, t in model.state_dict().items()
    }
    save_file(tensors, directory / "consolidated.safetensors")
    return directory
