"""Real run folders built from replay files: canonical HumanEval solutions, with chosen samples made wrong.

Shared by the report, compare and gate tests. Every run goes through `run_evaluation` and the Docker
sandbox, so the verdicts in samples.jsonl are the sandbox's. Runs are cached for the test session (by
their recipe), so test modules that need the same run share one evaluation.
"""

from __future__ import annotations

import atexit
import gzip
import json
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

WRONG_BODY = "    return None\n"  # passes no HumanEval test
HUMANEVAL_SIZE = 164


@cache
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="evalkit-replayed-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def humaneval_problems(data_dir: Path | None = None) -> list[dict]:
    root = data_dir or Path(os.environ["EVALKIT_DATA_DIR"])
    with gzip.open(root / "humaneval" / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def task_ids(count: int, start: int = 0, step: int = 1) -> tuple[str, ...]:
    return tuple(f"HumanEval/{i}" for i in range(start, start + count * step, step))


def write_replay(path: Path, wrong: tuple[str, ...] = (), limit: int | None = None, samples: int = 1,
                 wrong_samples: tuple[tuple[str, int], ...] = ()) -> Path:
    """Every problem (the first `limit`) answered canonically, except all samples of the ids in `wrong`
    and the (id, sample index) pairs in `wrong_samples`."""
    rows = []
    for doc in humaneval_problems()[:limit]:
        for i in range(samples):
            bad = doc["task_id"] in wrong or (doc["task_id"], i) in wrong_samples
            rows.append({"task_id": doc["task_id"], "completion": WRONG_BODY if bad else doc["canonical_solution"]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@cache
def replayed_run(name: str, wrong: tuple[str, ...] = (), limit: int | None = None, samples: int = 1,
                 temperature: float = 0.0, wrong_samples: tuple[tuple[str, int], ...] = (),
                 data_dir: Path | None = None) -> Path:
    """Evaluate a replay file (see `write_replay`) on HumanEval through the sandbox; return the run folder."""
    from evalkit.data import DataConfig
    from evalkit.requests import SamplingParams
    from evalkit.runner import RunOptions, run_evaluation

    replay = write_replay(_workdir() / f"{name}.jsonl", wrong, limit, samples, wrong_samples)
    opts = RunOptions(model=f"replay:{replay}", tasks=["humaneval"], limit=limit, output_dir=_workdir() / "runs",
                      sampling=SamplingParams(n=samples, temperature=temperature),
                      data=DataConfig.from_options(str(data_dir) if data_dir else None), sandbox_workers=2)
    path, _ = run_evaluation(opts, progress=False, log=lambda _m: None)
    return path


def copy_run(run: Path, name: str) -> Path:
    """A copy of a run folder, to edit without touching the cached original."""
    target = _workdir() / "copies" / name
    shutil.copytree(run, target)
    return target
