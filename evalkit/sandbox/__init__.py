"""Where generated code runs: a pool of Docker containers, or (explicit opt-in) the bare host."""

from __future__ import annotations

from typing import Protocol

from evalkit.sandbox.program import Execution, Program, SandboxError, SandboxUnavailable

__all__ = ["Execution", "Program", "Sandbox", "SandboxError", "SandboxUnavailable", "open_sandbox"]


class Sandbox(Protocol):
    """Runs programs; `run` is thread-safe, and `size` is how many run at once.

    `run` returns a verdict-bearing Execution, or raises SandboxUnavailable when the sandbox could not run
    the program at all (the engine is gone): it never turns an infrastructure fault into a verdict.
    """

    size: int

    def run(self, program: Program) -> Execution: ...

    def describe(self) -> dict: ...

    def label_run(self, run_id: str) -> None: ...

    def close(self) -> None: ...


def open_sandbox(unsafe_local: bool = False, workers: int | None = None, image: str | None = None) -> Sandbox:
    if unsafe_local:
        from evalkit.sandbox.local import UnsafeLocalExecutor

        return UnsafeLocalExecutor()
    from evalkit.sandbox.docker_pool import DockerSandbox

    return DockerSandbox(image=image, workers=workers)
