"""Infrastructure faults are never a verdict: an engine outage, a worker killed or paused from outside, a dead
run's leftover containers. Each test breaks only what it started itself: the engine "goes away" behind a socket
proxy (evalkit.sandbox.socket_proxy), never the shared dockerd, and only this test's containers are killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from evalkit.sandbox import Program, SandboxError, SandboxUnavailable
from evalkit.sandbox.docker_pool import LABEL, DockerSandbox, owner_alive, owner_labels
from evalkit.sandbox.image import image_tag
from evalkit.sandbox.socket_proxy import DockerSocketProxy

pytestmark = pytest.mark.docker

SLOW = Program({"s.py": "import time\ntime.sleep(1.5)\nprint('done')\n"}, (("python3", "s.py"),), timeout=20)
QUICK = Program({"w.py": "pass"}, (("python3", "w.py"),))


@pytest.fixture
def proxy(tmp_path, monkeypatch):
    """Every docker call of this process (SDK and CLI) goes through a proxy the test can cut."""
    try:
        subprocess.run(["docker", "image", "inspect", image_tag()], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"no Docker sandbox image: {e}")
    with DockerSocketProxy(tmp_path / "docker.sock") as p:
        monkeypatch.setenv("DOCKER_HOST", p.docker_host)
        yield p
    # a pool closed while the engine was away cannot remove its containers: remove this process's own
    leftovers = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={LABEL}.owner-pid={os.getpid()}",
                                "--filter", "status=exited"], capture_output=True, text=True, timeout=30,
                               env={**os.environ, "DOCKER_HOST": ""}).stdout.split()
    if leftovers:
        subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True, timeout=60,
                       env={**os.environ, "DOCKER_HOST": ""})


def containers_of(pool: DockerSandbox) -> list[str]:
    out = subprocess.run(["docker", "ps", "-q", "--filter", f"label={LABEL}.pool={pool.pool_id}"],
                         capture_output=True, text=True, timeout=30, env={**os.environ, "DOCKER_HOST": ""})
    return out.stdout.split()


def when_running(pool: DockerSandbox, action, delay: float = 0.7) -> threading.Thread:
    """Do `action(container ids)` to the pool's containers once a program is under way."""

    def act() -> None:
        time.sleep(delay)
        action(containers_of(pool))

    thread = threading.Thread(target=act)
    thread.start()
    return thread


def test_an_engine_outage_mid_run_costs_no_verdict(proxy):
    with DockerSandbox(workers=2, engine_wait=60) as pool:
        pool.run(QUICK)  # workers up before the outage
        outage = threading.Thread(target=proxy.outage, args=(5.0,))
        with ThreadPoolExecutor(2) as runner:
            futures = [runner.submit(pool.run, SLOW) for _ in range(6)]
            time.sleep(0.5)
            outage.start()
            results = [f.result(timeout=240) for f in futures]
        outage.join()
        assert [r.status for r in results] == ["ok"] * 6
        assert all(r.stdout.strip() == "done" for r in results)
        assert pool.retried >= 1 and proxy.cut >= 1
        assert pool.run(SLOW).ok  # and the pool goes on


def test_an_engine_that_stays_away_stops_the_run(proxy):
    with DockerSandbox(workers=1, engine_wait=2) as pool:
        pool.run(QUICK)
        threading.Timer(0.5, proxy.down).start()
        with pytest.raises(SandboxUnavailable, match="did not come back within 2 s"):
            pool.run(SLOW)
        assert isinstance(SandboxUnavailable("x"), SandboxError)
    proxy.up()


def test_a_worker_killed_from_outside_runs_its_program_again(proxy):
    with DockerSandbox(workers=1, engine_wait=30) as pool:
        pool.run(QUICK)  # the worker is up: the kill lands while SLOW runs
        killer = when_running(pool, lambda ids: subprocess.run(["docker", "kill", *ids], capture_output=True))
        result = pool.run(SLOW)
        killer.join()
        assert result.ok and result.stdout.strip() == "done"
        assert pool.retried == 1 and pool.replaced == 0


def test_a_worker_paused_from_outside_runs_its_program_again(proxy):
    with DockerSandbox(workers=1, engine_wait=30) as pool:
        pool.run(QUICK)
        pauser = when_running(pool, lambda ids: subprocess.run(["docker", "pause", *ids], capture_output=True))
        result = pool.run(SLOW)
        pauser.join()
        assert result.ok and pool.retried == 1
        assert containers_of(pool) and all(  # the paused worker was removed, its replacement runs
            "paused" not in subprocess.run(["docker", "inspect", "-f", "{{.State.Status}}", c],
                                           capture_output=True, text=True).stdout for c in containers_of(pool))


def test_a_program_that_wedges_or_kills_nothing_but_itself_is_judged(proxy):
    """The program's own failures stay its own: a timeout is a timeout, a crash a failure, nothing retried."""
    with DockerSandbox(workers=1, engine_wait=30) as pool:
        spin = pool.run(Program({"t.py": "while True:\n    pass\n"}, (("python3", "t.py"),), timeout=2))
        crash = pool.run(Program({"c.py": "import os\nos.kill(os.getpid(), 9)\n"}, (("python3", "c.py"),)))
        assert (spin.status, crash.status, pool.retried) == ("timeout", "failed", 0)


def test_leftovers_of_a_dead_owner_are_removed_and_a_live_ones_kept(proxy):
    import docker

    client = docker.from_env()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    labels_dead = owner_labels("leftover-test") | {f"{LABEL}.owner-pid": str(dead.pid), f"{LABEL}.owner-start": "1"}
    assert not owner_alive(labels_dead) and owner_alive(owner_labels("leftover-test"))
    started = []
    try:
        for labels in (labels_dead, owner_labels("leftover-test")):
            started.append(client.containers.run(image_tag(), ["sleep", "120"], detach=True, labels=labels,
                                                 network_mode="none", user="10001:10001"))
        with DockerSandbox(workers=1) as pool:
            assert pool.leftovers_removed >= 1
        remaining = {c.id for c in client.containers.list(all=True, filters={"label": f"{LABEL}.pool=leftover-test"})}
        assert started[0].id not in remaining and started[1].id in remaining
    finally:
        for container in started:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass


def test_workers_carry_their_owner_and_run(proxy):
    with DockerSandbox(workers=1) as pool:
        pool.label_run("run-123")
        pool.run(QUICK)
        (cid,) = containers_of(pool)
        labels = json.loads(subprocess.run(["docker", "inspect", "-f", "{{json .Config.Labels}}", cid],
                                           capture_output=True, text=True).stdout)
        assert labels[f"{LABEL}.owner-pid"] == str(os.getpid()) and labels[f"{LABEL}.run-id"] == "run-123"
    assert not containers_of(pool)  # closing removes them


def cut_after_first_sample(proxy: DockerSocketProxy, runs: Path) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(p.stat().st_size for p in runs.glob("*/samples.jsonl")):
                proxy.down()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_run_whose_engine_stays_away_stops_with_the_resume_hint(proxy, tmp_path, data_dir, monkeypatch):
    """The runner records no verdict for samples the sandbox could not run, and says how to resume."""
    from evalkit.data import DataConfig
    from evalkit.runner import RunInterrupted, RunOptions, run_evaluation

    replay = tmp_path / "replay.jsonl"
    replay.write_text("".join(json.dumps({"task_id": f"HumanEval/{i}", "completion": "    import time\n"
                                          "    time.sleep(1.5)\n    return None\n"}) + "\n" for i in range(6)))
    monkeypatch.setenv("EVALKIT_SANDBOX_ENGINE_WAIT", "2")
    opts = RunOptions(model=f"replay:{replay}", tasks=["humaneval"], limit=6, output_dir=tmp_path / "runs",
                      data=DataConfig(mirror=Path(data_dir)), sandbox_workers=1)
    watcher = cut_after_first_sample(proxy, tmp_path / "runs")
    try:
        with pytest.raises(RunInterrupted) as stopped:
            run_evaluation(opts, progress=False, log=lambda m: None)
    finally:
        watcher.join()
        proxy.up()
    assert isinstance(stopped.value.cause, SandboxUnavailable)
    samples = [json.loads(line) for line in (stopped.value.path / "samples.jsonl").open()] \
        if (stopped.value.path / "samples.jsonl").exists() else []
    assert all(s["verdict"] != "error" for s in samples) and len(samples) < 6


def test_closing_the_pool_ends_the_programs_in_flight(proxy):
    """An interrupted run closes its sandbox: a program still running ends then, it is not waited for."""
    pool = DockerSandbox(workers=1)
    pool.run(QUICK)
    long = Program({"l.py": "import time\ntime.sleep(120)\n"}, (("python3", "l.py"),), timeout=150)
    with ThreadPoolExecutor(1) as runner:
        running = runner.submit(pool.run, long)
        time.sleep(1.0)
        pool.close()
        with pytest.raises(SandboxError, match="closed"):
            running.result(timeout=60)  # well before the program's own two minutes
    assert not containers_of(pool)


def test_a_program_with_an_end_signal_takes_no_stdin():
    with pytest.raises(ValueError, match="no stdin"):
        Program({"a.py": ""}, (("python3", "a.py"),), stdin="x", end_signal=True)
