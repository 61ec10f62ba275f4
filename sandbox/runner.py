"""The sandbox worker: runs untrusted programs, one at a time, inside a locked-down container.

It reads one JSON request per line on stdin and writes one JSON result per line on stdout:

    request: {"id", "files": {name: text}, "commands": [[argv], ...], "timeout", "memory_mb", "stdin"}
    result:  {"id", "status", "exit_code", "stdout", "stderr", "duration", "detail"}

Each program gets a fresh directory under /tmp and its own process group with resource limits.
As PID 1 of its container, the worker afterwards kills every other process (kill(-1)) and empties
the writable mounts, so nothing a program starts or writes survives into the next one.

This file uses only the standard library: it runs under the image's python3, and evalkit's local
executor imports `execute` from it for the explicit unsandboxed opt-in.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

OUTPUT_TAIL = 16 * 1024  # bytes of stdout/stderr sent back: the end, where tracebacks are
FILE_SIZE_LIMIT = 16 * 1024 * 1024  # any file a program writes, its captured stdout included
SCRATCH_DIRS = ("/tmp", "/dev/shm")
FORK_PYTHON = False  # set in the container: `python3 FILE` runs in a fork of this interpreter
CLEAN_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/tmp",
    "GOCACHE": "/tmp/.cache/go",
    "GOPATH": "/tmp/.cache/gopath",
    "GO111MODULE": "off",
    "GOFLAGS": "-mod=mod",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
}


def _limits(memory_mb: int | None, cpu_seconds: float):
    def apply() -> None:
        os.setsid()
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
        cpu = int(cpu_seconds) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        if memory_mb:
            size = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return apply


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - OUTPUT_TAIL))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return ("[...truncated...]\n" + text) if size > OUTPUT_TAIL else text


def _describe_exit(code: int) -> str:
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    hint = {"SIGXFSZ": " (file size limit)", "SIGXCPU": " (CPU time limit)", "SIGKILL": " (killed)"}
    return f"killed by {name}{hint.get(name, '')}"


def _run_python_forked(script: str, workdir: str, paths: tuple[str, str, str], req: dict, timeout: float) -> int:
    """`python3 SCRIPT` without paying for a new interpreter: fork this one and run the script in the child.

    The child gets the same limits, environment, working directory and exit-status semantics as a real
    `python3 SCRIPT` (SystemExit codes, traceback and status 1 on an uncaught exception).
    """
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.chdir(workdir)
        for fd, (path, flags) in enumerate(zip(paths, (os.O_RDONLY, os.O_WRONLY, os.O_WRONLY), strict=True)):
            os.dup2(os.open(path, flags), fd)
        os.closerange(3, 65536)
        _limits(req.get("memory_mb"), timeout)()
        os.environ.clear()
        os.environ.update(CLEAN_ENV)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        sys.argv = [script]
        sys.path[0] = workdir
        import random

        random.seed()  # a fresh interpreter would not share the runner's random state
        import runpy

        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code & 0xFF)


def _wait(pid: int, timeout: float) -> int | None:
    """Exit status of `pid` (negative: killed by that signal), or None if it outlives `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() >= deadline:
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def _run_command(argv: list[str], workdir: str, logdir: str, step: int, req: dict) -> tuple[str, int | None, str]:
    out_path = os.path.join(logdir, f"{step}.out")
    err_path = os.path.join(logdir, f"{step}.err")
    in_path = os.path.join(logdir, f"{step}.in")
    with open(in_path, "w") as f:
        f.write(req.get("stdin") or "")
    for path in (out_path, err_path):
        open(path, "wb").close()
    timeout = float(req.get("timeout", 10.0))
    if FORK_PYTHON and len(argv) == 2 and argv[0] == "python3" and argv[1].endswith(".py"):
        pid = _run_python_forked(argv[1], workdir, (in_path, out_path, err_path), req, timeout)
        code = _wait(pid, timeout)
        _kill_group(pid)
        if code is None:
            os.waitpid(pid, 0)
            return "timeout", None, f"timed out after {timeout:g}s"
        return ("ok" if code == 0 else "failed"), code, _describe_exit(code)
    with open(in_path, "rb") as fin, open(out_path, "wb") as fout, open(err_path, "wb") as ferr:
        try:
            proc = subprocess.Popen(
                argv, cwd=workdir, env=CLEAN_ENV, stdin=fin, stdout=fout, stderr=ferr,
                close_fds=True, preexec_fn=_limits(req.get("memory_mb"), timeout),
            )
        except OSError as e:
            return "failed", None, f"cannot start {argv[0]!r}: {e}"
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait()
            return "timeout", None, f"timed out after {timeout:g}s"
        _kill_group(proc.pid)  # daemons the program left behind in its group
    return ("ok" if code == 0 else "failed"), code, _describe_exit(code)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def execute(req: dict, logroot: str | None = None) -> dict:
    """Run one program request and return its result dict (see the module docstring)."""
    start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="prog-", dir=logroot)
    logdir = tempfile.mkdtemp(prefix="log-", dir=logroot)
    status, code, detail, stdout, stderr = "ok", 0, "", "", ""
    try:
        for name, text in req.get("files", {}).items():
            path = os.path.join(workdir, name)
            if os.path.dirname(name):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        commands = req["commands"]
        for step, argv in enumerate(commands):
            status, code, detail = _run_command(argv, workdir, logdir, step, req)
            stdout = _tail(os.path.join(logdir, f"{step}.out"))
            stderr = _tail(os.path.join(logdir, f"{step}.err"))
            if status != "ok":
                if step < len(commands) - 1 and status == "failed":
                    status = "build_failed"
                break
    except Exception as e:  # a broken request must not take the worker down
        status, code, detail = "error", None, f"worker could not run the program: {type(e).__name__}: {e}"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(logdir, ignore_errors=True)
    return {
        "id": req.get("id"), "status": status, "exit_code": code, "stdout": stdout, "stderr": stderr,
        "duration": time.monotonic() - start, "detail": detail,
    }


def _reset_container() -> None:
    """Kill every process but this one and empty the scratch mounts (only ever as PID 1)."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:  # reap what was killed, including orphans re-parented to us
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == 0:
            break
    for top in SCRATCH_DIRS:
        try:
            entries = os.listdir(top)
        except OSError:
            continue
        for name in entries:
            path = os.path.join(top, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def _make_undumpable() -> None:
    # A program runs as our uid; without this it could open /proc/1/fd/1 and forge result lines.
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:
        pass


def main() -> None:
    if os.getpid() != 1:
        sys.exit("sandbox runner: refusing to run outside a container (it kills every other process)")
    _make_undumpable()
    global FORK_PYTHON
    FORK_PYTHON = True  # only as PID 1, where every stray child is killed and reaped after each program
    out = sys.stdout
    sys.stdout = sys.stderr
    out.write(json.dumps({"ready": True, "python": sys.version.split()[0]}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except json.JSONDecodeError as e:
            result = {"id": None, "status": "error", "detail": f"bad request line: {e}"}
        else:
            result = execute(req)
        _reset_container()
        out.write(json.dumps(result) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
