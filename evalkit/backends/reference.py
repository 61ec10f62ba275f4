"""The harness's self-check: answer every problem with its reference solution.

On every task it must score 1.0; anything less is a bug in a task's prompt, sanitizer or checker.
"""

from __future__ import annotations

from collections.abc import Sequence

from evalkit.backends.base import Backend, BackendError
from evalkit.requests import GenerationRequest, LoglikelihoodRequest, SamplingParams


class ReferenceBackend(Backend):
    name = "reference"

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingParams) -> list[list[str]]:
        out = []
        for req in requests:
            if req.reference is None:
                raise BackendError(
                    f"{req.task_id} has no reference solution, so the reference backend cannot answer it"
                )
            out.append([req.reference] * sampling.n)
        return out

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[list[float]]:
        out = []
        for req in requests:
            if req.reference is None:
                raise BackendError(f"{req.task_id} has no reference answer, so the reference backend cannot score it")
            out.append([0.0 if i == req.reference else -10.0 for i in range(len(req.continuations))])
        return out
