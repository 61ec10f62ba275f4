"""A program to execute in the sandbox, and what came of it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from evalkit.errors import EvalkitError


@dataclass(frozen=True)
class Program:
    """Files to write into a fresh, empty working directory, then commands to run there in order.

    Every command but the last is a build step (a compiler, say): if one fails, the rest are skipped.
    `timeout` bounds each command's wall-clock time. `memory_mb` caps each process's address space
    (None leaves only the container's cgroup limit, which JVMs need). `stdin` feeds the last command.
    """

    files: dict[str, str]
    commands: tuple[tuple[str, ...], ...]
    timeout: float = 10.0
    memory_mb: int | None = 1024
    stdin: str = ""

    def to_json(self) -> dict:
        d = asdict(self)
        d["commands"] = [list(c) for c in self.commands]
        return d


@dataclass(frozen=True)
class Execution:
    """The outcome of one Program.

    status: "ok" (every command exited 0), "failed" (a command exited non-zero or died of a signal),
    "build_failed" (a build step failed), "timeout", or "error" (the sandbox itself failed: no verdict
    on the program can be drawn).
    """

    status: str
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    detail: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_json(cls, d: dict) -> Execution:
        return cls(**{k: d[k] for k in ("status", "exit_code", "stdout", "stderr", "duration", "detail") if k in d})


class SandboxError(EvalkitError, RuntimeError):
    """The sandbox cannot run at all (no engine, no image); the message says how to fix it."""


class SandboxUnavailable(SandboxError):
    """The engine stayed away past the retry budget: no verdict can be drawn, so the run stops (resumable)."""
