"""Model backends, chosen by the --model string.

    reference            the canonical solution of every problem (the harness's self-check)
    replay:FILE.jsonl    completions generated elsewhere
    openai:BASE_URL      a model behind an OpenAI-compatible server
    hf:PATH_OR_REPO      any causal LM that transformers loads
    NAME or FOLDER       evalkit's own PyTorch models (codestral-mamba, mistral-7b, ... or a checkpoint folder)

Which options apply to which backend is decided here, from each backend class's declared `options`.
"""

from __future__ import annotations

import importlib

from evalkit.backends.base import Backend, BackendError

__all__ = ["BACKENDS", "Backend", "BackendError", "backend_class", "resolve_backend"]

# prefix -> "module:Class". A spec without a known prefix is a native model name or checkpoint folder.
BACKENDS: dict[str, str] = {
    "reference": "evalkit.backends.reference:ReferenceBackend",
    "replay:": "evalkit.backends.replay:ReplayBackend",
    "openai:": "evalkit.backends.openai_api:OpenAIBackend",
    "hf:": "evalkit.backends.hf:HFBackend",
}
NATIVE = "evalkit.backends.native:NativeBackend"


def split_spec(spec: str) -> tuple[str, str]:
    """(backend path "module:Class", target): `replay:a.jsonl` -> (replay's class, "a.jsonl")."""
    for prefix, path in BACKENDS.items():
        if spec == prefix or (prefix.endswith(":") and spec.startswith(prefix)):
            return path, spec.removeprefix(prefix)
    return NATIVE, spec


def backend_class(spec: str) -> type[Backend]:
    path, _ = split_spec(spec)
    module, _, cls = path.partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as e:
        raise BackendError(f"the backend for --model {spec!r} is unavailable: {e}. "
                           "Install evalkit with the extra it needs (see README, Backends).") from e


def resolve_backend(spec: str, known_ids: dict[str, set[str]] | None = None, **options) -> Backend:
    """Build the backend `spec` names, with the backend options the user set (None values are unset)."""
    cls = backend_class(spec)
    given = {k: v for k, v in options.items() if v is not None}
    if unknown := sorted(set(given) - cls.options):
        takes = ", ".join(f"--{o.replace('_', '-')}" for o in sorted(cls.options)) or "none"
        flags = ", ".join(f"--{o.replace('_', '-')}" for o in unknown)
        raise BackendError(f"{flags} does not apply to --model {spec!r} (the {cls.name} backend takes: {takes})")
    _, target = split_spec(spec)
    return cls.from_spec(target, known_ids=known_ids, **given)
