"""The explicit, loudly-named opt-in to run generated code on the host, without any isolation.

It applies the same per-program limits as the container runner (timeout, address space, file size,
own process group) but nothing else: the code can read your files, your environment and the network.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings

from evalkit.sandbox.image import recipe_dir
from evalkit.sandbox.program import Execution, Program

WARNING = (
    "UNSAFE: generated code runs on this machine without a sandbox (--unsafe-local-execution). "
    "It can read and delete your files, see your environment variables and use the network."
)


def _runner_module():
    spec = importlib.util.spec_from_file_location("evalkit_sandbox_runner", recipe_dir() / "runner.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


class UnsafeLocalExecutor:
    """Runs Programs as host subprocesses. Thread-safe; for trusted completions only."""

    def __init__(self) -> None:
        warnings.warn(WARNING, stacklevel=2)
        self._runner = _runner_module()
        self._root = tempfile.mkdtemp(prefix="evalkit-unsafe-")
        self.size = max(1, os.cpu_count() or 1)

    def run(self, program: Program) -> Execution:
        return Execution.from_json(self._runner.execute(program.to_json(), logroot=self._root))

    def label_run(self, run_id: str) -> None:
        """Nothing to label: no containers."""

    def describe(self) -> dict:
        return {"kind": "unsafe-local", "workers": self.size}

    def close(self) -> None:
        import shutil

        shutil.rmtree(self._root, ignore_errors=True)
