"""`evalkit compare`: per-task deltas and exactly the samples that flipped, on replayed runs."""

from __future__ import annotations

import pytest
from replayed_runs import HUMANEVAL_SIZE, replayed_run, task_ids
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.compare import compare_runs
from evalkit.experiment import differing_settings
from evalkit.store import load_run, natural_key

TEN_PERCENT = round(0.10 * HUMANEVAL_SIZE)


def compare(*args: str) -> str:
    result = CliRunner().invoke(app, ["compare", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.docker
@pytest.mark.slow
def test_flips_and_deltas_on_humaneval(sandbox):
    flipped = task_ids(TEN_PERCENT, step=10)
    base, worse = load_run(replayed_run("base")), load_run(replayed_run("flip-10pct", wrong=flipped))
    [task] = compare_runs(base, worse).tasks
    assert task.paired == HUMANEVAL_SIZE and task.unpaired == 0
    assert [f.task_id for f in task.broken] == list(flipped)
    assert task.fixed == [] and {f.b_verdict for f in task.broken} == {"failed"}
    [delta] = task.deltas
    assert delta.metric == "pass@1" and delta.delta == pytest.approx(-TEN_PERCENT / HUMANEVAL_SIZE)
    # The other direction: the same problems, now fixed.
    [back] = compare_runs(worse, base).tasks
    assert [f.task_id for f in back.fixed] == list(flipped) and back.broken == []


@pytest.mark.docker
@pytest.mark.slow
def test_cli_lists_the_flipped_problems(sandbox):
    flipped = task_ids(TEN_PERCENT, step=10)
    out = compare(replayed_run("base"), replayed_run("flip-10pct", wrong=flipped))
    assert f"{TEN_PERCENT} of {HUMANEVAL_SIZE} paired samples flipped (0 fixed in B, {TEN_PERCENT} broken in B)" in out
    listed = out.split("broken (passed in A, not in B):")[1]
    assert [name.split(" [")[0] for name in " ".join(listed.split()).split(", ")] == list(flipped)
    delta_pp = f"{-100 * TEN_PERCENT / HUMANEVAL_SIZE:+.2f}"
    assert f"humaneval  pass@1  100.00  {100 - 100 * TEN_PERCENT / HUMANEVAL_SIZE:.2f}  {delta_pp}" in out
    short = compare(replayed_run("base"), replayed_run("flip-10pct", wrong=flipped), "--max-listed", "2")
    assert f"... and {TEN_PERCENT - 2} more" in short


@pytest.mark.docker
@pytest.mark.slow
def test_flips_are_per_sample_with_several_samples(sandbox):
    base = replayed_run("base-10x20", limit=20, samples=10, temperature=0.8)
    one = replayed_run("one-sample-10x20", wrong_samples=(("HumanEval/3", 4),), limit=20, samples=10, temperature=0.8)
    [task] = compare_runs(load_run(base), load_run(one)).tasks
    assert task.paired == 200
    assert [(f.task_id, f.sample_index) for f in task.flips] == [("HumanEval/3", 4)]
    assert {d.metric: round(d.delta, 9) for d in task.deltas} == {"pass@1": round(-0.1 / 20, 9), "pass@10": 0.0}
    assert "HumanEval/3#4 [failed]" in compare(base, one)


def test_settings_that_differ_ignore_local_paths():
    config = {"model": "a", "sampling": {"n": 1, "temperature": 0.0},
              "tasks": {"humaneval": {"dataset": {"source": "local", "files": {"/one/place/h.jsonl.gz": "abc"}}}}}
    moved = {**config, "model": "b",
             "tasks": {"humaneval": {"dataset": {"source": "local", "files": {"/elsewhere/h.jsonl.gz": "abc"}}}}}
    assert differing_settings([config, moved]) == {}
    hotter = {**config, "sampling": {"n": 1, "temperature": 0.8}}
    assert differing_settings([config, hotter]) == {"sampling.temperature": [0.0, 0.8]}
    other_data = {**config, "tasks": {"humaneval": {"dataset": {"source": "local", "files": {"/x": "def"}}}}}
    assert list(differing_settings([config, other_data])) == ["tasks.humaneval.dataset.files"]


def test_natural_order_of_problem_ids():
    ids = ["HumanEval/10", "HumanEval/2", "HumanEval/100", "HumanEval/1"]
    assert sorted(ids, key=natural_key) == ["HumanEval/1", "HumanEval/2", "HumanEval/10", "HumanEval/100"]
