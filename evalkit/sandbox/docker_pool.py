"""A pool of long-lived, locked-down worker containers that execute programs one at a time.

Starting a container costs ~0.3 s, so each worker runs many programs: the in-container runner
(sandbox/runner.py, PID 1) gives each program a fresh directory, its own process group and resource
limits, then kills every leftover process and wipes the scratch mounts.

Infrastructure faults are never a verdict. When a worker dies or stops answering, the pool asks the engine
why before it blames the program:
- the program's own doing: the container ran out of memory (OOM-killed), or it is running but its runner did
  not answer within the program's timeouts plus GRACE -> "failed" / "timeout", and the worker is replaced;
- an outside cause: the container was killed (`docker kill`: only the engine can signal PID 1), paused,
  removed, or the engine itself went away -> the same program runs again on a fresh worker, after waiting up
  to `engine_wait` seconds for the engine to come back. If it stays away, or workers keep dying, `run` raises
  SandboxUnavailable and the run stops with the --resume hint; no verdict is recorded.

Every container carries labels (owner host, pid and start time, pool, run id), so the leftovers of a killed
run (`kill -9` leaves its containers behind) are found and removed by the next pool, and only once their
owner is dead.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import socket
import subprocess
import threading
import time
import uuid

from evalkit.sandbox.image import image_tag, require_image, runner_source
from evalkit.sandbox.program import Execution, Program, SandboxError, SandboxUnavailable

# Container limits. A program's own limits (timeout, address space, file size) are applied inside.
CONTAINER_LIMITS = {
    "memory": "2g",  # the whole container; RLIMIT_AS per program is the first line of defence
    "pids": 256,  # fork bombs stop here; JVMs need ~40 threads
    "cpus": "1",
    "tmpfs_mb": 512,  # /tmp: the program's files, build outputs, compiler caches
}
START_TIMEOUT = 60.0
GRACE = 15.0  # extra seconds beyond a program's own timeouts before its worker counts as wedged
ENGINE_WAIT = 120.0  # seconds to wait for an engine that went away before the run stops (a dockerd restart: ~5 s)
ENGINE_WAIT_ENV = "EVALKIT_SANDBOX_ENGINE_WAIT"  # overrides ENGINE_WAIT
OUTSIDE_RETRIES = 5  # a program whose worker is killed or paused from outside runs again at most this often
PAUSE_CHECK = 5.0  # while a program runs, how often the pool looks whether its container was paused
LABEL = "evalkit.sandbox"


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' off Linux): with the pid, it names one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_labels(pool: str, run_id: str | None = None) -> dict[str, str]:
    pid = os.getpid()
    labels = {LABEL: "1", f"{LABEL}.owner-host": socket.gethostname(), f"{LABEL}.owner-pid": str(pid),
              f"{LABEL}.owner-start": _start_ticks(pid), f"{LABEL}.pool": pool}
    if run_id:
        labels[f"{LABEL}.run-id"] = run_id
    return labels


def owner_alive(labels: dict[str, str]) -> bool:
    """Whether the process that started a labelled container still runs (True when it cannot be told)."""
    if labels.get(f"{LABEL}.owner-host") != socket.gethostname():
        return True  # another machine's engine or namespace: not ours to judge
    try:
        pid = int(labels.get(f"{LABEL}.owner-pid", ""))
    except ValueError:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    recorded = labels.get(f"{LABEL}.owner-start", "")
    return not recorded or _start_ticks(pid) in ("", recorded)  # a reused pid is not the owner


def docker_run_args(image: str, name: str, labels: dict[str, str] | None = None) -> list[str]:
    lim = CONTAINER_LIMITS
    label_args = [arg for key, value in (labels or {}).items() for arg in ("--label", f"{key}={value}")]
    return [
        "docker", "run", "-i", "--name", name, *label_args,
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


class Engine:
    """The Docker engine as the `docker` SDK sees it (DOCKER_HOST and friends apply): is it there, what state
    is a container in, and which labelled containers are left over from dead owners."""

    def __init__(self) -> None:
        self._client = None
        self._lock = threading.Lock()

    def client(self):
        import docker

        with self._lock:
            if self._client is None:
                self._client = docker.from_env(timeout=15)
            return self._client

    def _reset(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def available(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:
            self._reset()
            return False

    def wait(self, budget: float, stop: threading.Event) -> bool:
        """Poll until the engine answers, for at most `budget` seconds or until `stop` is set."""
        deadline = time.monotonic() + budget
        while True:
            if self.available():
                return True
            if time.monotonic() >= deadline or stop.wait(0.5):
                return False

    def state(self, name: str) -> dict | None:
        """The container's State (Status, Paused, OOMKilled, ExitCode...), or None when it no longer exists.
        Raises ConnectionError when the engine cannot be asked."""
        import docker

        try:
            return self.client().containers.get(name).attrs.get("State") or {}
        except docker.errors.NotFound:
            return None
        except Exception as e:
            self._reset()
            raise ConnectionError(str(e)) from e

    def remove(self, name: str) -> bool:
        """Remove a container (running, paused or exited); False when the engine could not be asked."""
        import docker

        try:
            self.client().containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
        except Exception:
            self._reset()
            return False
        return True

    def remove_leftovers(self) -> int:
        """Remove labelled worker containers whose owner process is dead; return how many."""
        removed = 0
        try:
            containers = self.client().containers.list(all=True, filters={"label": f"{LABEL}=1"})
        except Exception:
            return 0
        for container in containers:
            if not owner_alive(container.labels or {}):
                try:
                    container.remove(force=True)
                    removed += 1
                except Exception:
                    pass
        return removed


class _Lost(Exception):
    """The worker died or stopped answering; `why` says what the pool saw."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


class _Worker:
    """One container and the thread that reads its result lines."""

    _ids = itertools.count()

    def __init__(self) -> None:
        self.name = f"evalkit-sbx-{os.getpid()}-{next(self._ids)}-{uuid.uuid4().hex[:6]}"
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.proc: subprocess.Popen | None = None

    def start(self, image: str, labels: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            docker_run_args(image, self.name, labels),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        threading.Thread(target=self._read, daemon=True).start()
        first = self._next_line(START_TIMEOUT)
        if first is None or not first.startswith('{"ready"'):
            raise _Lost(f"a sandbox worker container failed to start: {self._stderr_text() or first or 'no answer'}")

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

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def execute(self, program: Program, engine: Engine) -> Execution:
        """Run one program; raise _Lost when the worker died, was paused, or did not answer in time."""
        rid = uuid.uuid4().hex
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"id": rid, **program.to_json()}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise _Lost("the worker's input is closed") from None
        deadline = time.monotonic() + program.timeout * len(program.commands) + GRACE
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Lost("no answer")
            try:
                line = self.lines.get(timeout=min(left, PAUSE_CHECK))
                break
            except queue.Empty:
                try:
                    state = engine.state(self.name)
                except ConnectionError:
                    continue  # the answer or the end of the stream will tell
                if state is None or state.get("Paused"):
                    raise _Lost("paused or gone") from None
        if line is None:
            raise _Lost("the worker ended")
        try:
            result = json.loads(line)
        except json.JSONDecodeError:
            raise _Lost("the worker wrote a broken result line") from None
        if result.get("id") != rid:
            raise _Lost("the worker answered out of turn")
        return Execution.from_json(result)

    def close_input(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except Exception:
            pass

    def discard(self, engine: Engine) -> bool:
        """Remove the container and reap its `docker run` client; False when the engine could not remove it."""
        self.close_input()
        removed = engine.remove(self.name)
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(timeout=10)
            except Exception:
                pass
        return removed


class DockerSandbox:
    """Runs Programs in a pool of worker containers. `run` is thread-safe and blocks for a free worker."""

    def __init__(self, image: str | None = None, workers: int | None = None, engine_wait: float | None = None,
                 run_id: str | None = None):
        self.image = image or image_tag()
        require_image(self.image)
        self.size = workers or max(1, os.cpu_count() or 1)
        self.engine = Engine()
        if engine_wait is None:
            try:
                engine_wait = float(os.environ.get(ENGINE_WAIT_ENV) or ENGINE_WAIT)
            except ValueError:
                raise SandboxError(f"{ENGINE_WAIT_ENV} must be a number of seconds") from None
        self.engine_wait = engine_wait
        self.pool_id = uuid.uuid4().hex[:12]
        self.run_id = run_id
        self.leftovers_removed = self.engine.remove_leftovers()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: set[_Worker] = set()
        self._unremoved: set[str] = set()  # containers to remove once the engine answers again
        self._lock = threading.Lock()
        self._engine_lock = threading.Lock()
        self._started = 0
        self._closed = threading.Event()
        self.replaced = 0  # workers replaced because their program brought them down
        self.retried = 0  # programs run again because their worker was lost to an outside cause

    def label_run(self, run_id: str) -> None:
        """Label the workers started from now on with the run they serve."""
        self.run_id = run_id

    def _acquire(self) -> _Worker:
        while True:
            with self._lock:
                grow = self._started < self.size and self._idle.empty()
                if grow:
                    self._started += 1
            if grow:
                worker = _Worker()
                with self._lock:
                    self._all.add(worker)
                try:
                    worker.start(self.image, owner_labels(self.pool_id, self.run_id))
                except _Lost:
                    self._forget(worker)
                    raise
                return worker
            worker = self._idle.get()
            if worker.alive:
                return worker
            self._forget(worker)  # its `docker run` client ended while idle (an engine restart): start anew

    def _forget(self, worker: _Worker) -> None:
        removed = worker.discard(self.engine)
        with self._lock:
            self._all.discard(worker)
            self._started -= 1
            if not removed:
                self._unremoved.add(worker.name)

    def _remove_unremoved(self) -> None:
        with self._lock:
            names, self._unremoved = self._unremoved, set()
        failed = {name for name in names if not self.engine.remove(name)}
        with self._lock:
            self._unremoved |= failed

    def _await_engine(self, why: str) -> None:
        with self._engine_lock:
            if self._closed.is_set():
                raise SandboxError("the sandbox was closed while waiting for the Docker engine")
            if not self.engine.available() and not self.engine.wait(self.engine_wait, self._closed):
                if self._closed.is_set():
                    raise SandboxError("the sandbox was closed while waiting for the Docker engine")
                raise SandboxUnavailable(
                    f"the Docker engine went away ({why}) and did not come back within {self.engine_wait:g} s; "
                    "no verdict was recorded for the samples in flight")
        self._remove_unremoved()

    def _cause(self, worker: _Worker, why: str) -> str:
        """Why a worker was lost: "engine" (unreachable), "outside" (killed, paused or removed from outside),
        "memory" (the program ran the container out of memory) or "wedged" (running, but no answer)."""
        try:
            state = self.engine.state(worker.name)
        except ConnectionError:
            return "engine"
        if state is None or state.get("Paused"):
            return "outside"
        if state.get("Running"):
            return "wedged" if why == "no answer" else "outside"
        return "memory" if state.get("OOMKilled") else "outside"

    def run(self, program: Program) -> Execution:
        lost_to_outside = 0
        while True:
            if self._closed.is_set():
                raise SandboxError("the sandbox is closed")
            try:
                worker = self._acquire()
            except _Lost as e:
                if self.engine.available():  # a start that failed with the engine up: retried, then reported
                    lost_to_outside += 1
                    if lost_to_outside > OUTSIDE_RETRIES:
                        raise SandboxError(str(e)) from None
                    time.sleep(0.5)
                else:
                    self._await_engine("a worker could not start")
                continue
            try:
                result = worker.execute(program, self.engine)
            except _Lost as e:
                cause = self._cause(worker, e.why)
                try:
                    if cause == "engine":
                        self._await_engine(e.why)
                finally:
                    self._forget(worker)  # once the engine is back, so that its container is removed too
                if self._closed.is_set():
                    raise SandboxError("the sandbox was closed while a program ran") from None
                if cause == "memory":
                    self._count_replaced()
                    return Execution(status="failed", detail="the program ran its sandbox container out of memory "
                                                             "(worker replaced)")
                if cause == "wedged":
                    self._count_replaced()
                    return Execution(status="timeout", detail="the program wedged its sandbox worker (replaced)")
                lost_to_outside += 1
                with self._lock:
                    self.retried += 1
                if lost_to_outside > OUTSIDE_RETRIES:
                    raise SandboxUnavailable(
                        f"sandbox workers were lost to outside causes {lost_to_outside} times in a row "
                        f"(last: {e.why}); no verdict was recorded") from None
                continue
            self._idle.put(worker)
            return result

    def _count_replaced(self) -> None:
        with self._lock:
            self.replaced += 1

    def describe(self) -> dict:
        return {"kind": "docker", "image": self.image, "workers": self.size, "limits": dict(CONTAINER_LIMITS)}

    def close(self) -> None:
        """Remove every worker, busy ones included: a program still running ends now."""
        self._closed.set()
        with self._lock:
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.close_input()
        for worker in workers:
            if not worker.discard(self.engine):
                self._unremoved.add(worker.name)
        self._remove_unremoved()  # what an outage left behind; the next pool removes the rest once we are gone

    def __enter__(self) -> DockerSandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
