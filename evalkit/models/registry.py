"""Short model names -> Hugging Face Hub checkpoints, and turning a --model value into a local directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from evalkit.models.checkpoint import CheckpointError


@dataclass(frozen=True)
class RegisteredModel:
    hub_id: str
    arch: str  # "mamba2" or "mistral": what the checkpoint must turn out to be


REGISTRY: dict[str, RegisteredModel] = {
    "codestral-mamba": RegisteredModel("mistralai/Mamba-Codestral-7B-v0.1", "mamba2"),
    "mistral-7b": RegisteredModel("mistralai/Mistral-7B-v0.1", "mistral"),
    "mistral-7b-v0.3": RegisteredModel("mistralai/Mistral-7B-v0.3", "mistral"),
    "mathstral": RegisteredModel("mistralai/Mathstral-7B-v0.1", "mistral"),
}

# The Hugging Face layout only: these repos also carry native or .bin copies of the same weights.
_HF_FILES = ["config.json", "model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json"]


def registered(name: str) -> tuple[str, RegisteredModel] | None:
    """The registry entry for a short name or its hub id, or None."""
    if name in REGISTRY:
        return name, REGISTRY[name]
    for short, entry in REGISTRY.items():
        if entry.hub_id == name:
            return short, entry
    return None


def _missing_message(name: str, hub_id: str, reason: str) -> str:
    local = f"./checkpoints/{hub_id.split('/')[-1]}"
    return (
        f"model {name!r} ({hub_id}) is not in the local Hugging Face cache and cannot be downloaded "
        f"({reason}). Download it where the hub is reachable (the repository is gated: accept its terms "
        f"and log in first):\n"
        f"    hf download {hub_id} --local-dir {local}   (older huggingface_hub: huggingface-cli download)\n"
        f"then pass the directory: --model {local}"
    )


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A local checkpoint directory for a path (used as is) or a registry name (cache, else download)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    entry = registered(str(name_or_path))
    if entry is None:
        names = ", ".join(REGISTRY)
        raise CheckpointError(
            f"{name_or_path}: no such checkpoint directory, and not a known model ({names})"
        )
    name, model = entry
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model.hub_id, allow_patterns=_HF_FILES, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError and friends): try the hub
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise CheckpointError(_missing_message(name, model.hub_id, "HF_HUB_OFFLINE is set"))
    try:
        return Path(snapshot_download(model.hub_id, allow_patterns=_HF_FILES))
    except Exception as e:  # network, authentication or gating errors, all with the same remedy
        raise CheckpointError(_missing_message(name, model.hub_id, f"{type(e).__name__}: {e}")) from e
