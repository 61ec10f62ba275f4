"""The task interface, its declared options, and the registry. Adapters live in the top-level `tasks` package."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal, get_args

from evalkit.data import DataConfig
from evalkit.errors import TaskError
from evalkit.metrics import pass_at_k_metrics
from evalkit.requests import GenerationRequest, LoglikelihoodRequest, SamplingParams
from evalkit.sandbox import Sandbox

__all__ = ["Doc", "Output", "Scored", "Task", "TaskError", "TaskOption", "VERDICTS", "Verdict", "build_tasks",
           "get_task", "register", "task_class", "task_description", "task_names", "timeout_option"]

Verdict = Literal["passed", "failed", "timeout", "error", "skipped"]
VERDICTS: tuple[str, ...] = get_args(Verdict)


@dataclass
class Scored:
    """The verdict on one sample.

    "passed" / "failed" / "timeout" judge the model. "error": the harness could not judge the sample (a
    sandbox that broke, a server that kept failing); it is not a judgement on the model, it is reported
    separately and `--resume` tries it again. "skipped": the problem cannot be judged here at all (Spider
    without its database) and is left out of the denominator.
    `program` is what was executed (code tasks), `answer` what was extracted (math tasks).
    """

    verdict: Verdict
    program: str | None = None
    error: str = ""
    answer: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"


Doc = dict  # one dataset row, always with a string "task_id"
Output = str | list[float]  # a completion, or the log-probabilities of a doc's continuations
OptionValue = str | int | float | bool


@dataclass(frozen=True)
class TaskOption:
    """A setting a task takes beyond the prompt variant and chat mode (a timeout, say), with its default.

    Set with `--task-option KEY=VALUE` (every task that takes KEY) or `TASK:KEY=VALUE`; the value is parsed
    as the default's type. Options land in the task's recorded settings, so they count in "same experiment".
    """

    default: OptionValue | None
    help: str
    choices: tuple[OptionValue, ...] = ()
    kind: type | None = None  # the value's type when the default is None

    def parse(self, value: OptionValue, where: str) -> OptionValue:
        kind = self.kind or type(self.default)
        if isinstance(value, str) and kind is not str:
            text = value.strip().lower()
            try:
                if kind is bool:
                    if text not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(text)
                    value = text in ("true", "1", "yes")
                else:
                    value = kind(text)
            except ValueError:
                raise TaskError(f"{where}: {value!r} is not a {kind.__name__}") from None
        if kind in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise TaskError(f"{where}: must be positive, got {value}")
        if self.choices and value not in self.choices:
            raise TaskError(f"{where}: {value!r} is not one of {', '.join(map(str, self.choices))}")
        return value


def timeout_option(default: float | None, reference: str) -> TaskOption:
    """The `timeout` option of a code task: wall-clock seconds per command (build steps included)."""
    return TaskOption(default, f"seconds each command may run; the reference scorer allows {reference}", kind=float)


class Task(ABC):
    """One benchmark: its documents, the request for each, how to judge an answer, and the metrics.

    Subclasses set `name` and `kind`, declare what they accept (`prompt_variants`, `supports_chat`,
    `options`), and fill `settings()` with everything that moves a score (prompt policy, stop sequences,
    sanitizer, checker, timeouts); the runner records it. The runner passes the chosen values to the
    constructor, which validates them: a task never changes after it is built.
    """

    name: ClassVar[str]
    kind: ClassVar[str] = "generate"  # or "loglikelihood"
    uses_sandbox: ClassVar[bool] = False
    default_max_tokens: ClassVar[int] = 512
    prompt_variants: ClassVar[tuple[str, ...]] = ()  # chosen by --prompt; the first is the default
    supports_chat: ClassVar[bool] = False  # has an instruct variant, chosen by --chat
    options: ClassVar[Mapping[str, TaskOption]] = {}  # chosen by --task-option

    def __init__(self, data: DataConfig, prompt: str | None = None, chat: bool = False,
                 **options: OptionValue) -> None:
        self.data = data
        self.provenance: dict = {}  # filled by docs(): source, revision or file sha256
        if prompt is not None and prompt not in self.prompt_variants:
            takes = f"one of {', '.join(self.prompt_variants)}" if self.prompt_variants else "no prompt variants"
            raise TaskError(f"{self.name}: unknown --prompt {prompt!r}; {self.name} takes {takes}")
        self.prompt_variant: str | None = prompt or (self.prompt_variants[0] if self.prompt_variants else None)
        if chat and not self.supports_chat:
            raise TaskError(f"{self.name} has no chat (instruct) variant")
        self.chat = chat
        if unknown := sorted(set(options) - set(self.options)):
            takes = ", ".join(self.options) or "none"
            raise TaskError(f"{self.name}: unknown task option(s) {', '.join(unknown)} (it takes: {takes})")
        self.option_values: dict[str, OptionValue | None] = {
            key: spec.parse(options[key], f"{self.name} option {key}") if key in options else spec.default
            for key, spec in self.options.items()
        }

    def option(self, key: str) -> OptionValue | None:
        """The chosen value of a declared option."""
        return self.option_values[key]

    @abstractmethod
    def docs(self) -> list[Doc]:
        """Load the evaluation rows; set self.provenance. Malformed rows raise TaskError naming the row."""

    @abstractmethod
    def request(self, doc: Doc) -> GenerationRequest | LoglikelihoodRequest:
        ...

    @abstractmethod
    def score(self, doc: Doc, output: Output, sandbox: Sandbox | None) -> Scored:
        """Judge one sample. A generation task's `output` is already cut at the request's stop sequences."""

    def aggregate(self, records: Sequence[dict], sampling: SamplingParams) -> dict:
        """Metrics from the per-sample records (each has task_id, sample_index, verdict, ...)."""
        return pass_at_k_metrics(records, sampling.n)

    def settings(self) -> dict:
        return {}

    def chosen(self) -> dict:
        """The declared options as chosen for this run (recorded beside `settings()`)."""
        out: dict = {}
        if self.prompt_variants:
            out["prompt_variant"] = self.prompt_variant
        if self.supports_chat:
            out["chat"] = self.chat
        return out | self.option_values

    def environment(self, sandbox: Sandbox | None) -> dict:
        """Facts about the execution environment that move a score (toolchain versions)."""
        return {}


_REGISTRY: dict[str, type[Task]] = {}
_BROKEN: dict[str, str] = {}  # adapter module -> why it failed to import
_DISCOVERED = False


def register(name: str):
    """Class decorator: register a Task subclass under `name`."""

    def add(cls: type[Task]) -> type[Task]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise TaskError(f"task {name!r} is registered twice")
        _REGISTRY[name] = cls
        return cls

    return add


def _discover() -> None:
    # The registry imports the adapters package (a designed inversion, like lm-eval's task scan): adapters
    # depend on evalkit, and evalkit finds them by name only.
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import tasks as adapters

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


def task_class(name: str) -> type[Task]:
    _discover()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        if _BROKEN:
            hint += " (task modules that failed to import: " + "; ".join(f"{m}: {e}" for m, e in _BROKEN.items()) + ")"
        raise TaskError(f"unknown task {name!r}.{hint} `evalkit tasks` lists the available tasks.")
    return _REGISTRY[name]


def task_description(name: str) -> str:
    """The first line of the task's module docstring (one module describes a family of tasks)."""
    doc = (sys.modules[task_class(name).__module__].__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


def get_task(name: str, data: DataConfig | None = None, prompt: str | None = None, chat: bool = False,
             **options: OptionValue) -> Task:
    return task_class(name)(data or DataConfig(), prompt=prompt, chat=chat, **options)


PerTask = Mapping[str, OptionValue]  # task name -> value


def build_tasks(names: Sequence[str], data: DataConfig, prompt: str | PerTask | None = None, chat: bool = False,
                options: Mapping[str, OptionValue | PerTask] | None = None,
                note=lambda message: None) -> dict[str, Task]:
    """Build the selected tasks with their options.

    A plain value goes to every selected task that accepts it, a {task: value} mapping to the named tasks.
    A value that no selected task accepts is an error naming the tasks that do; tasks left at their default
    by a plain value are reported through `note`.
    """
    classes = {name: task_class(name) for name in names}
    kwargs: dict[str, dict] = {name: {} for name in names}

    def spread(flag: str, key: str, value, accepts) -> None:
        if isinstance(value, Mapping):
            if unknown := sorted(set(value) - set(classes)):
                raise TaskError(f"{flag} names task(s) not selected with --tasks: {', '.join(unknown)}")
            for name, v in value.items():
                kwargs[name][key] = v  # the constructor says why a task refuses it
            return
        takers = [name for name, cls in classes.items() if accepts(cls, value)]
        if not takers:
            raise TaskError(f"{flag} {value!r} applies to none of the selected tasks; "
                            f"{_who_accepts(flag, key, value)}")
        for name in takers:
            kwargs[name][key] = value
        if others := [name for name in classes if name not in takers]:
            note(f"{flag} {value} applies to {', '.join(takers)}; {', '.join(others)} keep their default")

    if prompt is not None:
        spread("--prompt", "prompt", prompt, lambda cls, v: v in cls.prompt_variants)
    if chat:
        spread("--chat", "chat", True, lambda cls, v: cls.supports_chat)
    for key, value in (options or {}).items():
        spread(f"--task-option {key}", key, value, lambda cls, v, k=key: k in cls.options)
    return {name: classes[name](data, **kwargs[name]) for name in names}


def _who_accepts(flag: str, key: str, value) -> str:
    all_classes = {name: task_class(name) for name in task_names()}
    if key == "prompt":
        takers = [f"{n} ({', '.join(c.prompt_variants)})" for n, c in all_classes.items() if c.prompt_variants]
    elif key == "chat":
        takers = [n for n, c in all_classes.items() if c.supports_chat]
    else:
        takers = [n for n, c in all_classes.items() if key in c.options]
    return f"tasks that take {flag.split()[0]}{' ' + key if flag.startswith('--task-option') else ''}: " + (
        ", ".join(takers) or "none")
