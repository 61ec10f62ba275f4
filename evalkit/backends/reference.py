"""The harness's self-check: answer every problem with its reference solution.

On every task it must score 1.0; anything less is a bug in a task's prompt, sanitizer or checker.
"""

from __future__ import annotations

from collections.abc import Sequence

from evalkit.backends.base import Backend, BackendError
from evalkit.requests import Completion, GenerationRequest, LoglikelihoodRequest, SamplingParams, Scores


class ReferenceBackend(Backend):
    """In chat mode the tasks' references are written as an instruct model answers (fenced code, boxed
    answers), so the self-check covers the instruct extraction path too."""

    name = "reference"
    draws_samples = False

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingParams) -> list[list[Completion]]:
        out = []
        for req in requests:
            if req.reference is None:
                raise BackendError(
                    f"{req.task_id} has no reference solution, so the reference backend cannot answer it"
                )
            out.append([Completion(req.reference, finish_reason="stop") for _ in req.sample_indices])
        return out

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Scores]:
        out = []
        for req in requests:
            if req.reference is None:
                raise BackendError(f"{req.task_id} has no reference answer, so the reference backend cannot score it")
            out.append([0.0 if i == req.reference else -10.0 for i in range(len(req.continuations))])
        return out
