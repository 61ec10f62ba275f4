"""Model backends, chosen by the --model string: `reference`, `replay:FILE.jsonl`, or a native model."""

from __future__ import annotations

from evalkit.backends.base import Backend, BackendError, truncate_at_stop

__all__ = ["Backend", "BackendError", "resolve_backend", "truncate_at_stop"]


def resolve_backend(spec: str, known_ids: dict[str, set[str]] | None = None, **options) -> Backend:
    """`reference`, `replay:PATH`, or a registry name / checkpoint path for the native PyTorch models."""
    if spec == "reference":
        from evalkit.backends.reference import ReferenceBackend

        return ReferenceBackend()
    if spec.startswith("replay:"):
        from evalkit.backends.replay import ReplayBackend

        return ReplayBackend(spec.removeprefix("replay:"), known_ids=known_ids)
    try:
        from evalkit.backends.native import NativeBackend
    except ImportError as e:
        raise BackendError(f"unknown model {spec!r}: the native model backend is unavailable ({e})") from e
    return NativeBackend.from_spec(spec, **options)
