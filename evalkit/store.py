"""A run folder: append-only logs of finished work, so a crashed run resumes without losing any.

    run.json          the run's configuration (written first; a resume must match it) and how to rebuild it
    generations.jsonl one line per generated doc: the backend's outputs, before scoring
    samples.jsonl     one line per scored sample: prompt, completion, program, verdict, error
    results.json      metrics per task, and the configuration (written last)
    .lock             held (flock) by the one process that writes the folder

Every line is flushed and fsynced before the work counts as done. A line cut short by a kill or a
full disk, or a line that is valid JSON but not a record (`{}`, `null`, an unknown verdict), is skipped
and counted as corrupt: that piece of work is simply done again on resume, and never becomes a new kind
of verdict that moves a score.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.errors import RunStoreError
from evalkit.tasks import VERDICTS

LOCK_FILE = ".lock"


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def valid_sample(row: object) -> bool:
    """Whether a samples.jsonl line is a sample record: its key fields typed, a known verdict, `passed` agreeing."""
    return (isinstance(row, dict) and isinstance(row.get("task"), str) and isinstance(row.get("task_id"), str)
            and _is_index(row.get("sample_index")) and row.get("verdict") in VERDICTS
            and row.get("passed") is (row.get("verdict") == "passed"))


def _is_output(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in value))


def valid_generation(row: object) -> bool:
    """Whether a generations.jsonl line is a generation record (outputs matched to sample indices)."""
    if not (isinstance(row, dict) and isinstance(row.get("task"), str) and isinstance(row.get("task_id"), str)
            and isinstance(row.get("outputs"), list)):
        return False
    outputs = row["outputs"]
    if "sample_indices" in row:
        indices = row["sample_indices"]
        if not isinstance(indices, list) or len(indices) != len(outputs) or not all(map(_is_index, indices)):
            return False
        return all(map(_is_output, outputs))
    # a line written before samples were indexed: a list of completions, or one log-likelihood list
    return all(isinstance(x, str) for x in outputs) or _is_output(outputs)


def _read_lines(path: Path, valid: Callable[[object], bool], corrupt: list[int]) -> Iterator[dict]:
    """The valid records of a JSON-lines log; `corrupt` gets the line numbers of the others (torn included)."""
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.endswith("\n"):
                corrupt.append(lineno)  # torn last line from a crash: not finished work
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                corrupt.append(lineno)
                continue
            if not valid(row):
                corrupt.append(lineno)
                continue
            yield row


def write_json_atomic(path: Path, obj) -> None:
    """Write `obj` to `path` through a temporary file and a rename; a failed write (a full disk) leaves the old
    file as it was and no temporary file behind."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_json_file(path: Path, what: str) -> dict:
    """A JSON object from `path`, or a RunStoreError that says what is wrong with the file."""
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise RunStoreError(f"{path} does not exist") from None
    except UnicodeDecodeError:
        raise RunStoreError(f"{path} is not UTF-8 text; the {what} is damaged") from None
    except json.JSONDecodeError as e:
        raise RunStoreError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); the {what} is damaged or "
                            "was cut short") from None
    except OSError as e:
        raise RunStoreError(f"cannot read {path}: {e.strerror or e}") from None
    if not isinstance(value, dict):
        raise RunStoreError(f"{path} holds a JSON {type(value).__name__}, not the {what}")
    return value


class RunStore:
    """One run folder. `corrupt` counts the lines the last reads skipped, per log file."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.corrupt: dict[str, list[int]] = {}
        self._lock_file = None

    @property
    def config_path(self) -> Path:
        return self.path / "run.json"

    def create(self, run_info: dict) -> None:
        """Make the folder (never an existing one), take its lock, and write run.json."""
        try:
            self.path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise RunStoreError(f"{self.path} already exists; a run folder is never overwritten") from None
        except OSError as e:
            raise RunStoreError(f"cannot create the run folder {self.path}: {e.strerror or e}") from None
        self.lock()
        write_json_atomic(self.config_path, run_info)

    # ------------------------------------------------------------------------------------------ the writer's lock

    def lock(self, wait: float = 0.0) -> None:
        """Become the folder's only writer, or raise RunStoreError naming the process that is.

        An flock on `.lock`: the kernel drops it when the holder exits, however it exits, so a crashed run
        never leaves a stale lock. `wait` seconds are spent retrying first (a retried Ray task whose previous
        attempt is still being torn down).
        """
        if self._lock_file is not None:
            return
        path = self.path / LOCK_FILE
        try:
            handle = open(path, "a+", encoding="utf-8")
        except OSError as e:
            raise RunStoreError(f"cannot write in the run folder {self.path}: {e.strerror or e}") from None
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    handle.close()
                    raise RunStoreError(f"cannot lock the run folder {self.path}: {e.strerror or e}") from None
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "?"
                    handle.close()
                    raise RunStoreError(
                        f"{self.path} is being written by another evalkit process ({holder}); two writers "
                        "would do the same work twice. Wait for it to finish, or stop it and resume.") from None
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self._lock_file = handle

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the last descriptor releases the flock
            self._lock_file = None

    # ------------------------------------------------------------------------------------------ run.json

    def load_run_info(self, require_config: bool = True) -> dict:
        """run.json, checked: a damaged or foreign file is a RunStoreError, never a traceback."""
        if not self.path.is_dir():
            raise RunStoreError(f"{self.path} is not a run folder (no such directory)")
        if not self.config_path.exists():
            raise RunStoreError(f"{self.path} is not an evalkit run folder (no run.json)")
        info = read_json_file(self.config_path, "run folder's run.json")
        if require_config and not isinstance(info.get("config"), dict):
            raise RunStoreError(f"{self.config_path} has no `config` section; it was not written by evalkit run, "
                                "or it is damaged")
        return info

    def update_run_info(self, run_info: dict) -> None:
        write_json_atomic(self.config_path, run_info)

    def set_status(self, status: str, **fields) -> None:
        info = self.load_run_info(require_config=False)
        info.update(status=status, **fields)
        self.update_run_info(info)

    # ------------------------------------------------------------------------------------------ the logs

    def generations(self) -> dict[tuple[str, str, int], dict]:
        """Finished generations, keyed by (task, task_id, sample_index): {prompt, output, finish_reason, info}.

        A generation line holds the samples it produced (`sample_indices`, `outputs`); a log-likelihood
        task's output is the list of scores. Lines written before samples were indexed hold every sample.
        """
        out = {}
        bad: list[int] = []
        for g in _read_lines(self.path / "generations.jsonl", valid_generation, bad):
            outputs = g["outputs"]
            if "sample_indices" not in g and outputs and all(isinstance(x, (int, float)) for x in outputs):
                outputs = [outputs]  # an old log-likelihood line: one list of scores
            indices = g.get("sample_indices", range(len(outputs)))
            reasons, info = g.get("finish_reasons"), g.get("info")
            reasons = reasons if isinstance(reasons, list) else []
            info = info if isinstance(info, list) else []
            for k, (i, output) in enumerate(zip(indices, outputs, strict=False)):
                out[(g["task"], g["task_id"], i)] = {
                    "prompt": g.get("prompt"), "output": output,
                    "finish_reason": reasons[k] if k < len(reasons) else None,
                    "info": info[k] if k < len(info) and isinstance(info[k], dict) else {},
                }
        self.corrupt["generations.jsonl"] = bad
        return out

    def samples(self) -> dict[tuple[str, str, int], dict]:
        """Scored samples, keyed by (task, task_id, sample_index); a later line for a sample replaces an
        earlier one (a resume that re-did an "error" sample)."""
        bad: list[int] = []
        out = {(s["task"], s["task_id"], s["sample_index"]): s
               for s in _read_lines(self.path / "samples.jsonl", valid_sample, bad)}
        self.corrupt["samples.jsonl"] = bad
        return out

    def append(self, name: str, rows: list[dict]) -> None:
        if not rows:
            return
        # One write of whole lines; a crash mid-write leaves at most one torn line, which readers skip.
        data = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
        path = self.path / name
        # A torn line from an earlier crash would glue onto our first line; start on a fresh line.
        if path.exists() and path.stat().st_size:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    data = "\n" + data
        with open(path, "a", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def write_results(self, results: dict) -> None:
        write_json_atomic(self.path / "results.json", results)


# ------------------------------------------------------------------------------------------ reading finished runs


@dataclass
class Run:
    """A finished run folder: its results.json, and its samples.jsonl read on first use."""

    path: Path
    results: dict
    _samples: list[dict] | None = field(default=None, repr=False)
    _corrupt: list[int] = field(default_factory=list, repr=False)

    @property
    def run_id(self) -> str:
        return str(self.results.get("run_id", self.path.name))

    @property
    def model(self) -> str:
        return str(self.results.get("model", "?"))

    @property
    def config(self) -> dict:
        return self.results.get("config", {})

    @property
    def task_names(self) -> list[str]:
        return list(self.results.get("tasks", {}))

    @property
    def label(self) -> str:
        """A short name for tables: the model, with the file or folder name instead of a full path."""
        model = self.model
        if model.startswith("replay:"):
            return "replay:" + Path(model[len("replay:"):]).name
        return Path(model).name if "/" in model else model

    def _load_samples(self) -> list[dict]:
        if self._samples is None:
            store = RunStore(self.path)
            self._samples = list(store.samples().values())
            self._corrupt = store.corrupt["samples.jsonl"]
        return self._samples

    @property
    def corrupt_lines(self) -> list[int]:
        """Line numbers of samples.jsonl that are not sample records (skipped, never counted as a verdict)."""
        self._load_samples()
        return self._corrupt

    def samples(self, task: str) -> list[dict]:
        """The task's scored samples, ordered by problem and sample index."""
        rows = [s for s in self._load_samples() if s["task"] == task]
        return sorted(rows, key=lambda s: (natural_key(s["task_id"]), s["sample_index"]))


def natural_key(task_id: object) -> tuple:
    """Sort key that puts HumanEval/2 before HumanEval/10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(task_id)))


def _number(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def results_problems(results: dict) -> list[str]:
    """What is wrong with the shape of a results.json (empty when nothing is): each entry names the field."""
    problems = []
    if not isinstance(results.get("tasks"), dict) or not results["tasks"]:
        return ["`tasks` is missing or not an object of per-task results"]
    if "config" in results and not isinstance(results["config"], dict):
        problems.append("`config` is not an object")
    for key in ("run_id", "model"):
        if key in results and not isinstance(results[key], str):
            problems.append(f"`{key}` is not a string")
    for task, info in results["tasks"].items():
        where = f"tasks.{task}"
        if not isinstance(info, dict):
            problems.append(f"`{where}` is not an object")
            continue
        metrics = info.get("metrics")
        if not isinstance(metrics, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    for v in metrics.values()):
            problems.append(f"`{where}.metrics` is missing or not an object of numbers")
        for key in ("stderr", "verdicts", "stderr_method"):
            value = info.get(key, {})
            if not isinstance(value, dict):
                problems.append(f"`{where}.{key}` is not an object")
            elif key != "stderr_method" and not all(map(_number, value.values())):
                problems.append(f"`{where}.{key}` holds values that are not numbers")
        for key in ("n", "samples_per_problem", "samples"):
            if key in info and not (_is_index(info[key])):
                problems.append(f"`{where}.{key}` is not a non-negative integer")
    return problems


def load_run(path: str | Path) -> Run:
    """Read a finished run folder (or the results.json inside one); a damaged results.json is a RunStoreError."""
    path = Path(path)
    if path.is_file() and path.name == "results.json":
        path = path.parent
    results_file = path / "results.json"
    if not path.is_dir():
        raise RunStoreError(f"{path} is not a run folder (no such directory)")
    if not results_file.exists():
        state = "unfinished run (run.json but no results.json; finish it with --resume)" if (
            path / "run.json").exists() else "not an evalkit run folder"
        raise RunStoreError(f"{path}: {state}")
    results = read_json_file(results_file, "run's results")
    if problems := results_problems(results):
        raise RunStoreError(f"{results_file} is not a valid results file: {'; '.join(problems[:4])}"
                            + (f" (and {len(problems) - 4} more)" if len(problems) > 4 else ""))
    return Run(path, results)
