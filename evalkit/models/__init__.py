"""In-repo models (Mamba-2, Mistral) loaded straight from Codestral/Mistral checkpoints."""

from __future__ import annotations

import os

import torch

from evalkit.models.checkpoint import CheckpointError, read_config
from evalkit.models.generate import generate, generate_batch, score_continuations


def model_arch(path: str | os.PathLike) -> str:
    """Which architecture a checkpoint holds: "mamba2" or "mistral"."""
    fmt, config = read_config(path)
    model_type = config.get("model_type")
    if fmt == "hf":
        if model_type in ("mamba2", "mistral"):
            return model_type
    elif model_type == "mamba":
        return "mamba2"
    elif model_type is None or model_type in ("mistral", "transformer"):
        return "mistral"
    name = "config.json" if fmt == "hf" else "params.json"
    raise CheckpointError(f"{path}/{name}: unknown model_type {model_type!r} (expected mamba2 or mistral)")


def load_model(
    path: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device | None = None
) -> torch.nn.Module:
    """Load a Mamba-2 or Mistral checkpoint (Hugging Face or native layout) as a model in eval mode."""
    arch = model_arch(path)
    if arch == "mamba2":
        from evalkit.models.mamba2 import load_mamba2

        return load_mamba2(path, dtype, device)
    from evalkit.models.mistral import load_mistral

    return load_mistral(path, dtype, device)


__all__ = [
    "CheckpointError",
    "generate",
    "generate_batch",
    "load_model",
    "model_arch",
    "score_continuations",
]
