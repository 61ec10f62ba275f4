"""Executing while generating changes when work happens, never what is recorded."""

from __future__ import annotations

import json

import pytest

from evalkit.data import DataConfig
from evalkit.requests import SamplingParams
from evalkit.runner import RunOptions, run_evaluation
from evalkit.tasks import get_task

pytestmark = pytest.mark.docker

def records(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return sorted(rows, key=lambda r: (r["task_id"], r["sample_index"]))


def test_overlap_and_requests_per_call_change_no_record(tmp_path, data_dir):
    docs = get_task("humaneval", DataConfig(mirror=data_dir)).docs()[:8]
    replay = tmp_path / "replay.jsonl"
    with open(replay, "w") as f:
        for i, d in enumerate(docs):
            for j in range(3):  # a right, a wrong and an early-exit sample per problem
                body = [d["canonical_solution"], "    return None\n", "    import sys\n    sys.exit(0)\n"][(i + j) % 3]
                f.write(json.dumps({"task_id": d["task_id"], "completion": body}) + "\n")
    outcomes = []
    for overlap, per_call in ((False, 1), (True, 1), (True, 5)):
        opts = RunOptions(model=f"replay:{replay}", tasks=["humaneval"], limit=8,
                          output_dir=tmp_path / f"{overlap}{per_call}", data=DataConfig(mirror=data_dir),
                          sampling=SamplingParams(n=3), sandbox_workers=2,
                          requests_per_call=per_call, overlap=overlap)
        run_dir, results = run_evaluation(opts, progress=False, log=lambda _m: None)
        outcomes.append((records(run_dir), results["tasks"]))
    (first, first_results), *others = outcomes
    assert len(first) == 24 and {r["verdict"] for r in first} == {"passed", "failed"}
    for rows, results in others:
        assert results == first_results
        assert [(r["task_id"], r["sample_index"], r["verdict"], r["completion"], r["program"]) for r in rows] == [
            (r["task_id"], r["sample_index"], r["verdict"], r["completion"], r["program"]) for r in first]
