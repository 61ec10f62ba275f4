"""What a task asks of a backend: the only types that cross the task/backend boundary."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GenerationRequest:
    """Continue `prompt` until a stop sequence or `max_tokens` new tokens.

    `reference` is what a perfect model would write; only the `reference` backend reads it.
    """

    task_id: str
    prompt: str
    stop: tuple[str, ...] = ()
    max_tokens: int = 512
    reference: str | None = None


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score each continuation of `context`; the backend returns one log-probability per continuation.

    `reference` is the index of the gold continuation; only the `reference` backend reads it.
    """

    task_id: str
    context: str
    continuations: tuple[str, ...]
    reference: int | None = None


@dataclass(frozen=True)
class SamplingParams:
    """How many samples per prompt and how to draw them. Temperature 0 means greedy."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 1234
    extra: dict = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict:
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}


def sample_seed(seed: int, task_id: str, index: int) -> int:
    """A per-sample seed that depends only on the run seed, the problem and the sample index.

    Backends seed each sample with it, so a resumed or re-batched run draws the same samples.
    """
    digest = hashlib.sha256(f"{seed}:{task_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF
