"""The task interface and registry. Adapters live in the top-level `tasks` package."""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from evalkit.requests import GenerationRequest, LoglikelihoodRequest, SamplingParams

if TYPE_CHECKING:
    from evalkit.data import DataConfig
    from evalkit.sandbox import Sandbox


class TaskError(ValueError):
    """A task cannot be built or its data cannot be read; the message says what and how to fix it."""


@dataclass
class Scored:
    """The verdict on one sample.

    verdict: "passed", "failed", "timeout" or "error" ("error": the harness could not judge the
    sample, e.g. the sandbox broke; it counts as not passed and is reported separately).
    `program` is what was executed (code tasks), `answer` what was extracted (math tasks).
    """

    verdict: str
    program: str | None = None
    error: str = ""
    answer: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"


Doc = dict  # one dataset row, always with a string "task_id"
Output = str | list[float]  # a completion, or the log-probabilities of a doc's continuations


class Task(ABC):
    """One benchmark: its documents, the request for each, how to judge an answer, and the metrics.

    Subclasses set `name` and `kind`, and fill `settings()` with everything that moves a score
    (prompt policy, stop sequences, sanitizer, checker, timeouts); the runner records it.
    """

    name: ClassVar[str]
    kind: ClassVar[str] = "generate"  # or "loglikelihood"
    uses_sandbox: ClassVar[bool] = False
    default_max_tokens: ClassVar[int] = 512

    def __init__(self, data: DataConfig):
        self.data = data
        self.provenance: dict = {}  # filled by docs(): source, revision or file sha256

    @abstractmethod
    def docs(self) -> list[Doc]:
        """Load the evaluation rows; set self.provenance. Malformed rows raise TaskError naming the row."""

    @abstractmethod
    def request(self, doc: Doc) -> GenerationRequest | LoglikelihoodRequest:
        ...

    @abstractmethod
    def score(self, doc: Doc, output: Output, sandbox: Sandbox | None) -> Scored:
        ...

    def aggregate(self, records: Sequence[dict], sampling: SamplingParams) -> dict:
        """Metrics from the per-sample records (each has task_id, sample_index, verdict, ...)."""
        from evalkit.metrics import pass_at_k_metrics

        return pass_at_k_metrics(records, sampling.n)

    def settings(self) -> dict:
        return {}

    def environment(self, sandbox: Sandbox | None) -> dict:
        """Facts about the execution environment that move a score (toolchain versions)."""
        return {}


_REGISTRY: dict[str, Callable[[DataConfig], Task]] = {}
_BROKEN: dict[str, str] = {}  # adapter module -> why it failed to import
_DISCOVERED = False


def register(name: str, factory: Callable[[DataConfig], Task] | None = None):
    """Register a task factory under `name`; usable as a class decorator."""

    def add(f):
        if name in _REGISTRY and _REGISTRY[name] is not f:
            raise TaskError(f"task {name!r} is registered twice")
        _REGISTRY[name] = f
        return f

    return add(factory) if factory is not None else add


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import tasks as adapters  # the top-level package of task adapters

    for mod in pkgutil.iter_modules(adapters.__path__):
        if mod.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"tasks.{mod.name}")
        except Exception as e:  # one broken adapter must not take the other tasks down
            _BROKEN[mod.name] = f"{type(e).__name__}: {e}"


def task_names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def broken_task_modules() -> dict[str, str]:
    _discover()
    return dict(_BROKEN)


def get_task(name: str, data: DataConfig) -> Task:
    _discover()
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        if _BROKEN:
            hint += " (task modules that failed to import: " + "; ".join(f"{m}: {e}" for m, e in _BROKEN.items()) + ")"
        raise TaskError(f"unknown task {name!r}.{hint} `evalkit tasks` lists the available tasks.")
    return _REGISTRY[name](data)
