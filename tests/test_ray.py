"""`evalkit run --ray`: shards as Ray tasks on a two-node cluster that the test starts on this machine (1 CPU
each), merged into a run equal to the one-process run, even when a worker node is killed mid-run.

The replay's HumanEval completions are canonical solutions that sleep (trusted code, so the shards execute
them with --unsafe-local-execution), which keeps the shards busy long enough for the kill to land.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from evalkit.data import DataConfig
from evalkit.requests import SamplingParams
from evalkit.runner import RunOptions, run_evaluation
from evalkit.store import RunStore

pytestmark = pytest.mark.slow
LIMIT = 8


@pytest.fixture(scope="module")
def ray_module():
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI installs the test extra, which includes ray")
        pytest.skip("ray is not installed (pip install 'evalkit[ray]')")
    return ray


@pytest.fixture(scope="module")
def cluster(ray_module):
    """A head node and one worker node, 1 CPU each, torn down however the tests end; the last test kills the
    worker node."""
    from ray.cluster_utils import Cluster

    os.environ["RAY_AUTH_MODE"] = "disabled"  # Ray 2.60 prints a token-auth notice otherwise
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes(timeout=120)
        yield cluster, worker
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def replay(tmp_path_factory) -> Path:
    from replayed_runs import WRONG_BODY, humaneval_problems

    rows = []
    for k, doc in enumerate(humaneval_problems()[:LIMIT]):
        for i in range(2):
            body = WRONG_BODY if (k + i) % 3 == 0 else doc["canonical_solution"]
            rows.append({"task_id": doc["task_id"], "completion": "    import time\n    time.sleep(1.0)\n" + body})
    path = tmp_path_factory.mktemp("replay") / "slow.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def options(replay: Path, out: Path) -> RunOptions:
    return RunOptions(model=f"replay:{replay}", tasks=["humaneval"], limit=LIMIT, output_dir=out,
                      sampling=SamplingParams(n=2), data=DataConfig.from_options(), unsafe_local=True,
                      sandbox_workers=1, requests_per_call=2)


@pytest.fixture(scope="module")
def unsharded(replay, tmp_path_factory) -> tuple[Path, dict]:
    return run_evaluation(options(replay, tmp_path_factory.mktemp("one")), progress=False, log=lambda m: None)


def canonical(run_dir: Path) -> list[dict]:
    return sorted(({k: v for k, v in s.items() if k != "error"} for s in RunStore(run_dir).samples().values()),
                  key=lambda s: (s["task"], s["task_id"], s["sample_index"]))


def assert_equal_runs(a: Path, b: Path) -> None:
    ra, rb = (json.loads((p / "results.json").read_text()) for p in (a, b))
    assert ra["tasks"] == rb["tasks"]
    assert canonical(a) == canonical(b)


def test_shards_on_two_ray_nodes_equal_the_one_process_run(cluster, replay, unsharded, tmp_path):
    from evalkit.ray_runner import run_on_ray

    head, _ = cluster
    for shared in (None, False):  # the shards write into the run folder, or send their records back
        path, _ = run_on_ray(options(replay, tmp_path / f"shared-{shared}"), 4, head.address, log=lambda m: None,
                             shared=shared)
        assert_equal_runs(path, unsharded[0])
        assert sorted(p.name for p in (path / "shards").iterdir()) == [f"shard-{k}-of-4" for k in range(4)]
        node_copies = Path(tempfile.gettempdir()) / "evalkit-ray" / path.name
        if shared is False:  # each shard removed its node-local copy once its records were sent
            assert not any(node_copies.iterdir())
            node_copies.rmdir()


def cli_args(replay: Path, address: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "evalkit.cli", "run", "--model", f"replay:{replay}", "--tasks", "humaneval",
            "--limit", str(LIMIT), "--n-samples", "2", "--unsafe-local-execution", "--sandbox-workers", "1",
            "--requests-per-call", "2", "--no-progress", "--ray-address", address, "--shards", "4", "-o", str(out)]


def wait_for_running_shards(out: Path, driver: subprocess.Popen, count: int) -> None:
    """Until `count` shard folders have logged samples and none of them has finished (bounded: 180 s)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        running = [p.parent for p in out.glob("*/shards/*/samples.jsonl") if not (p.parent / "results.json").exists()]
        if len(running) >= count:
            return
        assert driver.poll() is None, driver.communicate()
        time.sleep(0.05)
    pytest.fail(f"{count} shards were never running at once in 180 s")


def assert_each_sample_logged_once(run_dir: Path) -> list[Path]:
    shards = sorted((run_dir / "shards").iterdir())
    assert len(shards) == 4
    for shard in shards:
        keys = Counter((s["task"], s["task_id"], s["sample_index"])
                       for s in map(json.loads, (shard / "samples.jsonl").read_text().splitlines()))
        assert max(keys.values()) == 1, f"{shard.name} logged a sample twice"
    return shards


def test_a_stopped_driver_resumes_on_ray(cluster, replay, unsharded, tmp_path):
    ray_cluster, _ = cluster
    out = tmp_path / "runs"
    driver = subprocess.Popen(cli_args(replay, ray_cluster.address, out), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for_running_shards(out, driver, 1)
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert driver.returncode == 130 and f"evalkit run --resume {run_dir}" in stderr, stderr
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"
    resumed = subprocess.run([sys.executable, "-m", "evalkit.cli", "run", "--resume", str(run_dir), "--no-progress"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_equal_runs(run_dir, unsharded[0])
    assert_each_sample_logged_once(run_dir)


def test_a_worker_node_killed_mid_run_changes_nothing(cluster, replay, unsharded, tmp_path):
    """Killed once both nodes run a shard (two unfinished shard folders with logged samples): the lost shard is
    retried on the other node, resumes its folder, and the merged run equals the one-process run."""
    ray_cluster, worker = cluster
    out = tmp_path / "runs"
    driver = subprocess.Popen(cli_args(replay, ray_cluster.address, out), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for_running_shards(out, driver, 2)  # both nodes are running a shard
        ray_cluster.remove_node(worker, allow_graceful=False)  # its raylet and workers die at once
        _, stderr = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, stderr
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert_equal_runs(run_dir, unsharded[0])
    shards = assert_each_sample_logged_once(run_dir)
    retried = [s.name for s in shards if "resumed" in json.loads((s / "run.json").read_text())]
    assert retried, "no shard was retried: the kill hit no running task"


def test_ray_without_the_extra_is_a_clear_error(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from evalkit.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees where it is not installed
    res = CliRunner().invoke(app, ["run", "--model", "reference", "--tasks", "gsm8k", "--limit", "2", "--ray",
                                   "--shards", "2", "-o", str(tmp_path)])
    assert res.exit_code == 2 and "pip install 'evalkit[ray]'" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


@pytest.mark.parametrize(("model", "workers", "wanted"), [
    ("reference", None, {"num_cpus": 1.0, "num_gpus": 0.0}),
    ("replay:x.jsonl", 3, {"num_cpus": 3.0, "num_gpus": 0.0}),
    ("openai:http://127.0.0.1:8000/v1", None, {"num_cpus": 1.0, "num_gpus": 0.0}),
    ("hf:mistralai/Mistral-7B-v0.3", None, {"num_cpus": 1.0, "num_gpus": 1.0}),
    ("codestral-mamba", 2, {"num_cpus": 2.0, "num_gpus": 1.0}),
])
def test_each_shard_asks_for_what_its_backend_needs(model, workers, wanted):
    from evalkit.ray_runner import shard_resources

    assert shard_resources(model, workers) == wanted
