"""From a sandbox Execution to a sample's verdict, the same way for every code task."""

from __future__ import annotations

from evalkit.sandbox import Execution, Program, Sandbox
from evalkit.tasks import Scored

ERROR_TAIL = 2000


def scored_from_execution(execution: Execution, program_text: str) -> Scored:
    """The verdict: "passed" needs every command to exit 0 and, for a program under a test harness, the
    harness's end-of-tests signal (the sandbox turns an exit 0 without it into "failed")."""
    if execution.status == "ok":
        return Scored("passed", program=program_text)
    if execution.status == "timeout":
        return Scored("timeout", program=program_text, error=execution.detail)
    if execution.status == "error":
        return Scored("error", program=program_text, error=execution.detail)
    what = "build failed" if execution.status == "build_failed" else execution.detail
    err = (execution.stderr or execution.stdout)[-ERROR_TAIL:]
    return Scored("failed", program=program_text, error=f"{what}\n{err}".strip())


def run_scored(sandbox: Sandbox | None, program: Program, program_text: str) -> Scored:
    if sandbox is None:
        return Scored("error", program=program_text, error="no sandbox was given to a code task")
    return scored_from_execution(sandbox.run(program), program_text)


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
