"""Shards and merge, and generate/score as two phases: each equals the one-process run, sample for sample.

The runs use the reference backend and a replay file made from it (with chosen wrong samples), on HumanEval
(executed; canonical code, so --unsafe-local-execution), MMLU (log-likelihoods) and GSM8K, 10 problems each.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.experiment import same_experiment
from evalkit.merge import without_timing
from evalkit.shard import Shard, shard_of
from evalkit.store import RunStore

TASKS = "humaneval,mmlu,gsm8k"
LIMIT = 10


def invoke(*args: str):
    res = CliRunner().invoke(app, list(args))
    assert "Traceback" not in res.output
    return res


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@cache
def _workdir() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="evalkit-shards-"))


@cache
def replay_file() -> Path:
    """Two samples per generated problem (every third problem's second sample wrong) and MMLU log-likelihoods
    (every third question's reversed), made from the reference run's generations."""
    out = _workdir() / "reference-for-replay"
    assert invoke("run", "--model", "reference", "--tasks", TASKS, "--limit", str(LIMIT), "--unsafe-local-execution",
                  "--no-progress", "-o", str(out)).exit_code == 0
    rows = []
    for k, g in enumerate(lines(next(out.iterdir()) / "generations.jsonl")):
        if g["task"] == "mmlu":
            scores = g["outputs"][0]
            rows.append({"task": "mmlu", "task_id": g["task_id"], "loglikelihoods": scores[::-1] if k % 3 == 0
                         else scores})
            continue
        wrong = "    return None\n" if g["task"] == "humaneval" else "The answer is 123456789."
        right = g["outputs"][0]
        rows.append({"task": g["task"], "task_id": g["task_id"], "completion": right})
        rows.append({"task": g["task"], "task_id": g["task_id"], "completion": wrong if k % 3 == 0 else right})
    path = _workdir() / "replay.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_args(backend: str) -> list[str]:
    model = "reference" if backend == "reference" else f"replay:{replay_file()}"
    return ["--model", model, "--tasks", TASKS, "--limit", str(LIMIT), "--unsafe-local-execution", "--no-progress"]


@cache
def unsharded(backend: str) -> Path:
    out = _workdir() / f"unsharded-{backend}"
    res = invoke("run", *run_args(backend), "-o", str(out))
    assert res.exit_code == 0, res.output
    return next(out.iterdir())


def shard_runs(backend: str, count: int, out: Path, *extra: str) -> list[Path]:
    for k in range(count):
        res = invoke("run", *run_args(backend), "--shard", f"{k}/{count}", "-o", str(out), *extra)
        assert res.exit_code == 0, res.output
    return [out / Shard(k, count).folder_name for k in range(count)]


def canonical(records: list[dict]) -> list[dict]:
    """Records in one order, timing aside, and without the scratch folder that --unsafe-local-execution names
    in tracebacks (a new temporary folder in every run)."""
    out = []
    for r in records:
        r = without_timing(r)
        out.append({**r, "error": re.sub(r"/tmp/evalkit-unsafe-[^/]+/prog-[^/]+/", "", r["error"])})
    return sorted(out, key=lambda r: (r["task"], r["task_id"], r["sample_index"]))


def assert_same_run(a: Path, b: Path) -> None:
    """Equal results, per-sample records and generations (timing fields aside), and the same experiment."""
    ra, rb = results(a), results(b)
    assert ra["tasks"] == rb["tasks"]
    assert same_experiment(ra["config"], rb["config"]) == []
    assert canonical(lines(a / "samples.jsonl")) == canonical(lines(b / "samples.jsonl"))
    assert RunStore(a).generations() == RunStore(b).generations()


@pytest.mark.parametrize("backend", ["reference", "replay"])
@pytest.mark.parametrize("count", [1, 4])
def test_shards_then_merge_equal_the_unsharded_run(backend, count, tmp_path):
    dirs = shard_runs(backend, count, tmp_path / "shards")
    held = [{(s["task"], s["task_id"]) for s in lines(d / "samples.jsonl")} for d in dirs]
    assert all(held) and sum(map(len, held)) == len(set().union(*held)) == 3 * LIMIT  # a partition
    for k, problems in enumerate(held):
        assert all(shard_of(task, tid, count) == k for task, tid in problems)
    res = invoke("merge", str(tmp_path / "merged"), *map(str, reversed(dirs)))
    assert res.exit_code == 0, res.output
    merged = tmp_path / "merged"
    assert_same_run(merged, unsharded(backend))
    if backend == "replay":
        verdicts = results(merged)["tasks"]["humaneval"]["verdicts"]
        assert verdicts["failed"] > 0 and results(merged)["tasks"]["mmlu"]["metrics"]["acc"] < 1
    # canonical order: tasks as run, problems in dataset order, samples by index
    order = [(s["task"], s["task_id"], s["sample_index"]) for s in lines(merged / "samples.jsonl")]
    dataset = [(s["task"], s["task_id"], s["sample_index"]) for t in TASKS.split(",")
               for s in sorted((s for s in lines(unsharded(backend) / "samples.jsonl") if s["task"] == t),
                               key=lambda s: (int(s["task_id"].rsplit("/", 1)[1]), s["sample_index"]))]
    assert order == dataset


@pytest.fixture(scope="module")
def four_shards(tmp_path_factory) -> list[Path]:
    return shard_runs("replay", 4, tmp_path_factory.mktemp("four"))


def test_a_missing_shard_is_refused_naming_it_and_its_problems(four_shards, tmp_path):
    res = invoke("merge", str(tmp_path / "m"), str(four_shards[0]), str(four_shards[1]), str(four_shards[3]))
    assert res.exit_code == 2
    missing = sorted({(s["task"], s["task_id"]) for s in lines(four_shards[2] / "samples.jsonl")})
    assert "shard 2 of 4: no folder given (run it with --shard 2/4)" in res.output
    assert f"{missing[0][0]} {missing[0][1]}" in res.output and f"of {len(missing)} problems are missing" in res.output
    assert not (tmp_path / "m").exists()


def test_an_unfinished_shard_is_refused_with_its_resume_command(four_shards, tmp_path):
    copy = Path(shutil.copytree(four_shards[1], tmp_path / "shard-1-of-4"))
    kept = (copy / "samples.jsonl").read_text().splitlines(keepends=True)[:-2]
    (copy / "samples.jsonl").write_text("".join(kept))
    res = invoke("merge", str(tmp_path / "m"), str(four_shards[0]), str(copy), *map(str, four_shards[2:]))
    assert res.exit_code == 2 and f"continue it with: evalkit run --resume {copy}" in res.output


def test_a_shard_with_other_settings_is_refused(four_shards, tmp_path):
    other = shard_runs("replay", 4, tmp_path / "other", "--task-option", "humaneval:timeout=5")
    res = invoke("merge", str(tmp_path / "m"), *map(str, four_shards[:3]), str(other[3]))
    assert res.exit_code == 2
    assert "is not a shard of the same experiment" in res.output and "tasks.humaneval.options.timeout" in res.output
    res = invoke("merge", str(tmp_path / "m"), str(shard_runs("replay", 2, tmp_path / "halves")[0]),
                 *map(str, four_shards))
    assert res.exit_code == 2 and "merge shards of one split" in res.output


def test_duplicates_identical_are_merged_once_and_conflicting_ones_refused(four_shards, tmp_path):
    twin = Path(shutil.copytree(four_shards[2], tmp_path / "again" / "shard-2-of-4"))  # a shard run twice
    res = invoke("merge", str(tmp_path / "ok"), *map(str, four_shards), str(twin))
    assert res.exit_code == 0, res.output
    assert_same_run(tmp_path / "ok", unsharded("replay"))

    rows = lines(twin / "samples.jsonl")
    flipped = next(r for r in rows if r["verdict"] == "passed")
    rows[rows.index(flipped)] = {**flipped, "verdict": "failed", "passed": False}
    (twin / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = invoke("merge", str(tmp_path / "bad"), *map(str, four_shards), str(twin))
    assert res.exit_code == 2
    assert (f"conflicting duplicates: {flipped['task']} {flipped['task_id']} sample {flipped['sample_index']} is "
            "judged passed in one and failed in the other") in res.output


def test_a_shard_folder_is_resumed_when_launched_again(tmp_path, monkeypatch):
    out = tmp_path / "shards"
    run_args("replay")  # the replay file is made before the fault below is injected
    real_append = RunStore.append
    calls = {"n": 0}

    def append_then_die(self, name, rows):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_append(self, name, rows)

    monkeypatch.setattr(RunStore, "append", append_then_die)
    assert invoke("run", *run_args("replay"), "--shard", "0/2", "-o", str(out)).exit_code == 130
    monkeypatch.undo()
    before = lines(out / "shard-0-of-2" / "samples.jsonl")
    res = invoke("run", *run_args("replay"), "--shard", "0/2", "-o", str(out))  # the same command, relaunched
    assert res.exit_code == 0 and "resuming" in res.output
    after = lines(out / "shard-0-of-2" / "samples.jsonl")
    assert after[: len(before)] == before and len({(r["task"], r["task_id"], r["sample_index"]) for r in after}) \
        == len(after)
    res = invoke("run", *run_args("replay"), "--task-option", "humaneval:timeout=5", "--shard", "0/2", "-o", str(out))
    assert res.exit_code == 2 and "give each experiment its own --output-path" in res.output


@pytest.mark.parametrize("spec", ["4/4", "a/b", "1", "-1/3"])
def test_a_bad_shard_spec_is_one_line(spec, tmp_path):
    res = invoke("run", *run_args("reference"), "--shard", spec, "-o", str(tmp_path))
    assert res.exit_code == 2 and "shard" in res.output
    assert len(res.output.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------ generate, then score


def test_generate_only_then_score_equals_one_phase_and_both_phases_resume(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    args = run_args("replay")
    one_phase = unsharded("replay")  # made before the faults below are injected
    real_append = RunStore.append
    budget = {"generations.jsonl": 2, "samples.jsonl": 7}

    def append_with_budget(self, name, rows):  # the process dies after a few writes of one kind
        if name in budget:
            budget[name] -= 1
            if budget[name] < 0:
                raise KeyboardInterrupt
        return real_append(self, name, rows)

    monkeypatch.setattr(RunStore, "append", append_with_budget)
    args.remove("--unsafe-local-execution")  # generating needs no sandbox; scoring chooses its own
    budget.pop("samples.jsonl")
    res = invoke("run", *args, "--generate-only", "-o", str(out))
    assert res.exit_code == 130, res.output
    run_dir = next(out.iterdir())
    assert not (run_dir / "samples.jsonl").exists()
    config = json.loads((run_dir / "run.json").read_text())["config"]
    assert config["tasks"]["humaneval"]["environment"] is None  # no sandbox yet: the scoring phase records it
    res = invoke("score", str(run_dir), "--unsafe-local-execution", "--no-progress")
    assert res.exit_code == 2 and f"finish the generation phase first: evalkit run --resume {run_dir}" in res.output

    budget.pop("generations.jsonl")
    res = invoke("run", "--resume", str(run_dir), "--no-progress")  # still generate-only, as recorded
    assert res.exit_code == 0 and f"evalkit score {run_dir}" in res.output, res.output
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "generated" and not (run_dir / "results.json").exists()

    budget["samples.jsonl"] = 7
    res = invoke("score", str(run_dir), "--unsafe-local-execution", "--no-progress")
    assert res.exit_code == 130 and len(lines(run_dir / "samples.jsonl")) == 7
    monkeypatch.undo()
    res = invoke("score", str(run_dir), "--unsafe-local-execution", "--no-progress")
    assert res.exit_code == 0, res.output
    assert_same_run(run_dir, one_phase)
    assert len(lines(run_dir / "samples.jsonl")) == len(lines(one_phase / "samples.jsonl"))
    assert len(lines(run_dir / "generations.jsonl")) == len(lines(one_phase / "generations.jsonl"))


def test_the_shard_of_a_problem_is_the_same_in_every_process():
    """Python's own hash() changes per process (PYTHONHASHSEED); a shard must not."""
    ids = [("humaneval", f"HumanEval/{i}") for i in range(40)] + [("mmlu", f"mmlu/anatomy/{i}") for i in range(40)]
    here = [shard_of(t, tid, 7) for t, tid in ids]
    code = ("import json, sys; from evalkit.shard import shard_of; "
            "print(json.dumps([shard_of(t, i, 7) for t, i in json.loads(sys.argv[1])]))")
    for seed in ("1", "2"):
        there = subprocess.run([sys.executable, "-c", code, json.dumps(ids)], capture_output=True, text=True,
                               env={**os.environ, "PYTHONHASHSEED": seed}, check=True, timeout=60)
        assert json.loads(there.stdout) == here
    assert set(here) == set(range(7))  # 80 problems reach every one of 7 shards


def test_generate_only_shards_are_scored_then_merged(tmp_path):
    args = run_args("replay")
    args.remove("--unsafe-local-execution")
    out = tmp_path / "shards"
    for k in range(2):
        assert invoke("run", *args, "--generate-only", "--shard", f"{k}/2", "-o", str(out)).exit_code == 0
    dirs = [out / Shard(k, 2).folder_name for k in range(2)]
    res = invoke("merge", str(tmp_path / "m"), *map(str, dirs))
    assert res.exit_code == 2 and f"continue it with: evalkit score {dirs[0]}" in res.output
    for d in dirs:
        assert invoke("score", str(d), "--unsafe-local-execution", "--no-progress").exit_code == 0
    assert invoke("merge", str(tmp_path / "m"), *map(str, dirs)).exit_code == 0
    assert_same_run(tmp_path / "m", unsharded("replay"))
