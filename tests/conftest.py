"""Shared fixtures: the benchmark mirror beside the repo, and whether a Docker sandbox is available."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "datasets"

# Tests read the shared mirror and never touch the network.
os.environ.setdefault("EVALKIT_DATA_DIR", str(SHARED_DATA))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Tests that press Ctrl-C on a child run need the child to take SIGINT. A suite started as a background job of a
# script inherits SIGINT ignored, its children would too, and Python leaves an ignored SIGINT ignored.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"benchmark mirror {SHARED_DATA} is missing: tests read the shared datasets beside the repo")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one thread is fastest, and on a busy shared CPU extra threads only wait on each other.
    Modules of model tests use it with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sandbox():
    """A Docker sandbox pool shared by the session. Skips only outside CI when no engine or image exists."""
    from evalkit.sandbox import SandboxError, open_sandbox

    try:
        pool = open_sandbox(workers=2)
    except SandboxError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the Docker sandbox: {e}")
        pytest.skip(f"no Docker sandbox: {e}")
    yield pool
    pool.close()
