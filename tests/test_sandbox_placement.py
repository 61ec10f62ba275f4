"""Where the sandbox's worker containers sit in the cgroup tree: on a cgroupfs engine, each worker slot in its own
top-level group (so a busy machine's other containers cannot starve the pool; benchmarks/bench_sandbox.py --load)."""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from evalkit.sandbox import Program, docker_pool
from evalkit.sandbox.docker_pool import CGROUP_PARENT_ENV, WorkerSlots, docker_run_args, worker_cgroup_parent


def test_run_args_place_the_container_under_the_given_parent():
    argv = docker_run_args("img:1", "w", cgroup_parent="/evalkit-sandbox-3")
    at = argv.index("--cgroup-parent")
    assert argv[at + 1] == "/evalkit-sandbox-3" and at < argv.index("img:1")  # a docker option, not the command's
    assert "--cgroup-parent" not in docker_run_args("img:1", "w")


def test_slots_are_the_lowest_free_numbers():
    slots = WorkerSlots()
    assert [slots.claim() for _ in range(3)] == [0, 1, 2]
    slots.release(1)
    assert slots.claim() == 1  # a replaced worker takes its predecessor's group
    assert slots.claim() == 3
    slots.release(7)  # releasing a slot nobody holds changes nothing
    assert slots.claim() == 4


@pytest.mark.parametrize(("driver_is_cgroupfs", "env", "expected"), [
    (True, None, "/evalkit-sandbox-2"),
    (True, "/ci/evalkit/", "/ci/evalkit-2"),
    (True, "", None),  # empty: the engine's default placement
    (False, None, None),  # systemd driver: each container already has its own scope
])
def test_parent_depends_on_the_engine_driver_and_the_setting(monkeypatch, driver_is_cgroupfs, env, expected):
    monkeypatch.setattr(docker_pool, "_engine_uses_cgroupfs", lambda: driver_is_cgroupfs)
    if env is None:
        monkeypatch.delenv(CGROUP_PARENT_ENV, raising=False)
    else:
        monkeypatch.setenv(CGROUP_PARENT_ENV, env)
    assert worker_cgroup_parent(2) == expected


def _parents_of_workers(pool_id: str | None = None) -> list[str]:
    """The cgroup parents of this process's live worker containers, or of one pool's only: other pools of this
    process (the session's shared sandbox) may hold slots of their own."""
    label = f"label=evalkit.sandbox.pool={pool_id}" if pool_id else f"name=evalkit-sbx-{os.getpid()}-"
    names = subprocess.run(["docker", "ps", "--filter", label, "--format", "{{.Names}}"],
                           capture_output=True, text=True, check=True, timeout=60).stdout.split()
    if not names:
        return []
    inspected = subprocess.run(["docker", "inspect", *names], capture_output=True, text=True, check=True, timeout=60)
    return sorted(c["HostConfig"]["CgroupParent"] for c in json.loads(inspected.stdout))


@pytest.mark.docker
def test_live_workers_get_their_own_groups_and_a_new_pool_reuses_them(monkeypatch):
    from evalkit.sandbox import SandboxError
    from evalkit.sandbox.docker_pool import DockerSandbox

    monkeypatch.delenv(CGROUP_PARENT_ENV, raising=False)
    cgroupfs = docker_pool._engine_uses_cgroupfs()
    slow = Program({"w.py": "import time\ntime.sleep(1.0)\n"}, (("python3", "w.py"),))
    seen = []
    for _ in range(2):  # the second pool finds the slots of the closed first one free again
        others = _parents_of_workers()  # live workers of other pools in this process keep their groups
        try:
            pool = DockerSandbox(workers=2)
        except SandboxError as e:
            if os.environ.get("CI"):
                raise
            pytest.skip(f"no Docker sandbox: {e}")
        try:
            with ThreadPoolExecutor(2) as threads:  # two programs at once: both workers start
                assert all(r.ok for r in threads.map(pool.run, [slow, slow]))
            mine = _parents_of_workers(pool.pool_id)
        finally:
            pool.close()
        assert _parents_of_workers(pool.pool_id) == []
        if cgroupfs:
            assert len(set(mine)) == 2 and all(p.startswith("/evalkit-sandbox-") for p in mine)
            assert not set(mine) & set(others)
        else:
            assert mine == ["", ""]
        seen.append(mine)
    assert seen[0] == seen[1]
