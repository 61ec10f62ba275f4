"""A crashed or interrupted run resumes without redoing finished work, and ends with identical results."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from evalkit.data import DataConfig
from evalkit.runner import RunOptions, run_evaluation
from evalkit.tasks import get_task

pytestmark = pytest.mark.docker
N = 18


@pytest.fixture(scope="module")
def slow_replay(tmp_path_factory, data_dir) -> Path:
    """Canonical solutions that each sleep a little (so a kill lands mid-run); every third one is wrong."""
    docs = get_task("humaneval", DataConfig.from_options(str(data_dir))).docs()[:N]
    path = tmp_path_factory.mktemp("replay") / "slow.jsonl"
    with open(path, "w") as f:
        for i, d in enumerate(docs):
            body = "    return None\n" if i % 3 == 0 else d["canonical_solution"]
            slow = "    import time\n    time.sleep(0.25)\n"
            f.write(json.dumps({"task_id": d["task_id"], "completion": slow + body}))
            f.write("\n")
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "evalkit.cli", "run", *args, "--no-progress", "--sandbox-workers", "1",
            "--requests-per-call", "2"]


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def start_and_stop(args: list[str], out: Path, sig: int, after_samples: int) -> tuple[Path, subprocess.Popen]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    run_dir = None
    while time.time() < deadline:
        runs = list(out.glob("*/samples.jsonl"))
        if runs and len(runs[0].read_text().splitlines()) >= after_samples:
            run_dir = runs[0].parent
            break
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted: {proc.stderr.read()}")
        time.sleep(0.05)
    assert run_dir is not None, "the run made no progress"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return run_dir, proc


@pytest.fixture(scope="module")
def clean_run(slow_replay, tmp_path_factory) -> tuple[Path, dict]:
    """The same replay, uninterrupted: what every resumed run must end up equal to."""
    opts = RunOptions(model=f"replay:{slow_replay}", tasks=["humaneval"], limit=N,
                      output_dir=tmp_path_factory.mktemp("clean"), data=DataConfig.from_options(),
                      sandbox_workers=1, requests_per_call=2)
    return run_evaluation(opts, progress=False, log=lambda m: None)


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run_dir, tmp_path / run_dir.name))


def test_resume_after_kill_9(slow_replay, clean_run, tmp_path):
    out = tmp_path / "runs"
    args = cli("--model", f"replay:{slow_replay}", "--tasks", "humaneval", "--limit", str(N), "--output-path", str(out))
    run_dir, proc = start_and_stop(args, out, signal.SIGKILL, after_samples=6)
    assert proc.returncode == -signal.SIGKILL
    done_before = {(s["task_id"], s["sample_index"]) for s in lines(run_dir / "samples.jsonl")}
    assert 6 <= len(done_before) < N
    assert not (run_dir / "results.json").exists()

    resumed = subprocess.run(cli("--model", f"replay:{slow_replay}", "--tasks", "humaneval", "--limit", str(N),
                                 "--output-path", str(out), "--resume", str(run_dir)),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    samples = lines(run_dir / "samples.jsonl")
    generations = lines(run_dir / "generations.jsonl")
    # Nothing finished was redone: every sample and every generation is logged exactly once.
    assert Counter((s["task_id"], s["sample_index"]) for s in samples).most_common(1)[0][1] == 1
    assert Counter(g["task_id"] for g in generations).most_common(1)[0][1] == 1
    assert len(samples) == N
    results = json.loads((run_dir / "results.json").read_text())
    assert results["tasks"] == clean_run[1]["tasks"]
    assert results["tasks"]["humaneval"]["metrics"]["pass@1"] == pytest.approx(2 / 3)


def test_ctrl_c_says_how_to_resume(slow_replay, tmp_path):
    out = tmp_path / "runs"
    args = cli("--model", f"replay:{slow_replay}", "--tasks", "humaneval", "--limit", str(N), "--output-path", str(out))
    run_dir, proc = start_and_stop(args, out, signal.SIGINT, after_samples=2)
    stderr = proc.stderr.read()
    assert proc.returncode == 130
    assert f"evalkit run --resume {run_dir}" in stderr
    assert "Traceback" not in stderr


def test_torn_last_line_is_redone(slow_replay, clean_run, tmp_path):
    run_dir = copy_of(clean_run[0], tmp_path)
    samples_file = run_dir / "samples.jsonl"
    kept = samples_file.read_text().splitlines(keepends=True)[:5]
    samples_file.write_text("".join(kept) + kept[-1][:40])  # a line cut short by a crash or a full disk
    (run_dir / "results.json").unlink()
    opts = RunOptions(model=f"replay:{slow_replay}", tasks=["humaneval"], limit=N, resume=run_dir,
                      data=DataConfig.from_options(), sandbox_workers=1, requests_per_call=2)
    _, results = run_evaluation(opts, progress=False, log=lambda m: None)
    assert results["tasks"] == clean_run[1]["tasks"]
    assert len(lines_ignoring_torn(samples_file)) == N


def lines_ignoring_torn(path: Path) -> list[dict]:
    out = []
    for x in path.read_text().splitlines():
        try:
            out.append(json.loads(x))
        except json.JSONDecodeError:
            pass
    return out


def test_resume_refuses_different_settings(slow_replay, clean_run, tmp_path):
    run_dir = copy_of(clean_run[0], tmp_path)
    res = subprocess.run(cli("--model", f"replay:{slow_replay}", "--tasks", "humaneval", "--limit", "5",
                             "--resume", str(run_dir)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "cannot resume" in res.stderr and "limit" in res.stderr


def test_full_disk_stops_cleanly_and_resumes(tmp_path, monkeypatch):
    from evalkit.runner import RunInterrupted
    from evalkit.store import RunStore

    real_append = RunStore.append
    writes = {"n": 0}

    def append_until_disk_full(self, name, rows):
        writes["n"] += 1
        if writes["n"] == 4:
            raise OSError(28, "No space left on device")
        return real_append(self, name, rows)

    opts = RunOptions(model="reference", tasks=["humaneval"], limit=40, output_dir=tmp_path,
                      data=DataConfig.from_options(), requests_per_call=8)
    monkeypatch.setattr(RunStore, "append", append_until_disk_full)
    with pytest.raises(RunInterrupted) as stopped:
        run_evaluation(opts, progress=False, log=lambda m: None)
    run_dir = stopped.value.path
    finished = len((run_dir / "samples.jsonl").read_text().splitlines())
    assert 0 < finished < 40
    monkeypatch.setattr(RunStore, "append", real_append)
    _, results = run_evaluation(RunOptions(**{**opts.__dict__, "resume": run_dir}), progress=False,
                                log=lambda m: None)
    assert results["tasks"]["humaneval"]["verdicts"] == {"passed": 40}
    assert len((run_dir / "samples.jsonl").read_text().splitlines()) == 40


# Where a run writes and how this process drives it; everything else must survive run.json, or a resumed run, a
# Ray shard or a merge would quietly run with another setting.
NOT_RECORDED = {"output_dir", "resume", "overlap", "score_only", "lock_wait"}


def test_every_run_option_survives_run_json(data_dir, tmp_path):
    import dataclasses

    from evalkit.requests import SamplingParams
    from evalkit.shard import Shard

    spider = tmp_path / "spider"
    spider.mkdir()
    given = RunOptions(
        model="replay:x.jsonl", tasks=["humaneval", "gsm8k"], limit=7,
        sampling=SamplingParams(n=3, temperature=0.5, top_p=0.9, seed=7),
        data=DataConfig(mirror=data_dir.resolve(), hub=True, revision="abc", spider_db_dir=spider),
        requests_per_call=5, max_tokens=99, unsafe_local=True, sandbox_workers=3,
        backend_options={"concurrency": 4, "max_stop_sequences": 4}, prompt={"mbpp": "zero-shot"}, chat=True,
        system_prompt="Be exact.", task_options={"timeout": 30}, shard=Shard(1, 4), generate_only=True,
    )
    defaults = RunOptions(model="m", tasks=["t"])
    fields = {f.name for f in dataclasses.fields(RunOptions)} - NOT_RECORDED
    assert not {f for f in fields if getattr(given, f) == getattr(defaults, f)}  # every field is set off its default
    back = RunOptions.from_record(json.loads(json.dumps(given.record())))
    assert {f: getattr(back, f) for f in fields} == {f: getattr(given, f) for f in fields}
