"""The backend interface: everything that turns prompts into text or log-probabilities."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from evalkit.requests import GenerationRequest, LoglikelihoodRequest, SamplingParams


class BackendError(RuntimeError):
    """A backend cannot serve a request; the message says why and how to fix it."""


class Backend(ABC):
    """A model behind a small interface.

    `generate` returns, for each request, `sampling.n` completions (the text after the prompt, cut
    before the first stop sequence). `loglikelihood` returns, for each request, one log-probability
    per continuation. Both take a batch; the runner decides the batch size.
    """

    name: str = "backend"

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingParams) -> list[list[str]]:
        ...

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[list[float]]:
        raise BackendError(f"backend {self.name!r} does not support log-likelihood scoring")

    def describe(self) -> dict:
        """Settings of this backend that can move a score; recorded in results.json."""
        return {"name": self.name}

    def close(self) -> None:
        """Release resources (processes, GPU memory)."""
        return None


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut `text` before the earliest occurrence of any stop sequence."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]
