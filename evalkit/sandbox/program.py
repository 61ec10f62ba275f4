"""A program to execute in the sandbox, what came of it, and the errors of a sandbox that cannot run one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from evalkit.errors import EvalkitError


@dataclass(frozen=True)
class Program:
    """Files to write into a fresh, empty working directory, then commands to run there in order.

    Every command but the last is a build step (a compiler, say): if one fails, the rest are skipped.
    `timeout` bounds each command's wall-clock time. `memory_mb` caps each process's address space
    (None leaves only the container's cgroup limit, which JVMs need). `stdin` feeds the last command.

    `end_signal`: the last command runs under a trusted test harness (evalkit.harness) that reads a per-run
    secret from stdin before any code of the completion runs and writes it to file descriptor 3 once the last
    test has passed. Exit status 0 without that signal is a failure: the program left before its tests ended.
    """

    files: dict[str, str]
    commands: tuple[tuple[str, ...], ...]
    timeout: float = 10.0
    memory_mb: int | None = 1024
    stdin: str = ""
    end_signal: bool = False

    def __post_init__(self) -> None:
        if self.end_signal and self.stdin:
            raise ValueError("a program with an end-of-tests signal takes no stdin: the signal uses it")

    def to_json(self) -> dict:
        d = asdict(self)
        d["commands"] = [list(c) for c in self.commands]
        return d


@dataclass(frozen=True)
class Execution:
    """The outcome of one Program.

    status: "ok" (every command exited 0, and the tests signalled their end where the program asked for it),
    "failed" (a command exited non-zero or died of a signal, or exited 0 before its tests ended),
    "build_failed" (a build step failed), "timeout", or "error" (the sandbox itself failed: no verdict
    on the program can be drawn). `end_signal`: whether the tests signalled their end (None: not asked).
    """

    status: str
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    detail: str = ""
    end_signal: bool | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_json(cls, d: dict) -> Execution:
        keys = ("status", "exit_code", "stdout", "stderr", "duration", "detail", "end_signal")
        return cls(**{k: d[k] for k in keys if k in d})


class SandboxError(EvalkitError, RuntimeError):
    """The sandbox cannot run at all (no engine, no image); the message says how to fix it."""


class SandboxUnavailable(SandboxError):
    """The sandbox engine went away mid-run and did not come back within the retry budget.

    No verdict was drawn on the program being run: the run stops, and `--resume` continues it once the
    engine is back.
    """
