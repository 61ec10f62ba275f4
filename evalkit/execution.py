"""From a sandbox Execution to a sample's verdict, the same way for every code task."""

from __future__ import annotations

import hashlib

from evalkit.sandbox import Execution, Program, Sandbox
from evalkit.tasks import Scored

ERROR_TAIL = 2000


def success_marker(program_text: str) -> str:
    """A token printed after the tests, so a program that exits 0 early (sys.exit) is not a pass."""
    return "EVALKIT-TESTS-PASSED-" + hashlib.sha256(program_text.encode()).hexdigest()[:16]


def with_success_marker(program_text: str) -> tuple[str, str]:
    """The Python program that prints its success marker after the tests, and the marker."""
    marker = success_marker(program_text)
    return program_text + f"print({marker!r})\n", marker


def scored_from_execution(execution: Execution, program_text: str, marker: str | None = None) -> Scored:
    if execution.status == "ok":
        if marker is None or marker in execution.stdout:
            return Scored("passed", program=program_text)
        return Scored("failed", program=program_text,
                      error="the program exited before its tests finished (an early exit in the completion?)")
    if execution.status == "timeout":
        return Scored("timeout", program=program_text, error=execution.detail)
    if execution.status == "error":
        return Scored("error", program=program_text, error=execution.detail)
    what = "build failed" if execution.status == "build_failed" else execution.detail
    err = (execution.stderr or execution.stdout)[-ERROR_TAIL:]
    return Scored("failed", program=program_text, error=f"{what}\n{err}".strip())


def run_scored(sandbox: Sandbox | None, program: Program, program_text: str, marker: str | None = None) -> Scored:
    if sandbox is None:
        return Scored("error", program=program_text, error="no sandbox was given to a code task")
    return scored_from_execution(sandbox.run(program), program_text, marker)


def toolchain_versions(sandbox: Sandbox | None, commands: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """First line of each `--version` command's output, run in the sandbox (recorded in results.json)."""
    if sandbox is None:
        return {}
    out = {}
    for name, argv in commands.items():
        ex = sandbox.run(Program(files={}, commands=(argv,), timeout=30, memory_mb=None))
        text = (ex.stdout or ex.stderr).strip()
        out[name] = text.splitlines()[0] if ex.ok and text else f"unavailable ({ex.detail})"
    return out
