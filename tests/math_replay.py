"""Run math and knowledge tasks end to end on replayed generations (no model, no network)."""

from __future__ import annotations

import json
from pathlib import Path

from evalkit.data import DataConfig
from evalkit.requests import SamplingParams
from evalkit.runner import RunOptions, run_evaluation


def replay_run(tmp_path: Path, task: str, lines: list[dict], **task_options) -> tuple[dict, list[dict]]:
    """Replay `lines` ({"task_id", "completion" or "loglikelihoods"}) on the first problems of `task`, whose
    ids must be exactly those in `lines`; several lines per id are several samples, in order.
    Returns the task's results.json entry and its samples.jsonl records."""
    path = tmp_path / f"{task}-replay.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    problems = len({line["task_id"] for line in lines})
    samples = len(lines) // problems
    opts = RunOptions(model=f"replay:{path}", tasks=[task], limit=problems, output_dir=tmp_path / "runs",
                      sampling=SamplingParams(n=samples), data=DataConfig.from_options(), task_options=task_options)
    run_dir, results = run_evaluation(opts, progress=False, log=lambda _m: None)
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    return results["tasks"][task], records


def reference_run(tmp_path: Path, tasks: list[str], limit: int | None = None, samples: int = 1,
                  **task_options) -> dict:
    """`evalkit run --model reference` on `tasks`; returns results.json's content."""
    opts = RunOptions(model="reference", tasks=tasks, limit=limit, output_dir=tmp_path / "runs",
                      sampling=SamplingParams(n=samples), data=DataConfig.from_options(), task_options=task_options)
    _, results = run_evaluation(opts, progress=False, log=lambda _m: None)
    return results
