"""A run folder: append-only logs of finished work, so a crashed run resumes without losing any.

    run.json          the run's configuration (written first; a resume must match it)
    generations.jsonl one line per generated doc: the backend's outputs, before scoring
    samples.jsonl     one line per scored sample: prompt, completion, program, verdict, error
    results.json      metrics per task, and the configuration (written last)

Every line is flushed and fsynced before the work counts as done. A line cut short by a kill or a
full disk is ignored when reading, and that piece of work is simply done again.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.errors import RunStoreError


def _read_lines(path: Path) -> Iterator[dict]:
    if not path.exists():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn last line from a crash: not finished work
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RunStore:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "run.json"

    def create(self, run_info: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=False)
        write_json_atomic(self.config_path, run_info)

    def load_run_info(self) -> dict:
        if not self.config_path.exists():
            raise RunStoreError(f"{self.path} is not an evalkit run folder (no run.json)")
        return json.loads(self.config_path.read_text())

    def update_run_info(self, run_info: dict) -> None:
        write_json_atomic(self.config_path, run_info)

    def generations(self) -> dict[tuple[str, str, int], dict]:
        """Finished generations, keyed by (task, task_id, sample_index): {prompt, output, finish_reason, info}.

        A generation line holds the samples it produced (`sample_indices`, `outputs`); a log-likelihood
        task's output is the list of scores. Lines written before samples were indexed hold every sample.
        """
        out = {}
        for g in _read_lines(self.path / "generations.jsonl"):
            outputs = g.get("outputs")
            if not isinstance(g, dict) or not isinstance(outputs, list) or "task" not in g or "task_id" not in g:
                continue
            if "sample_indices" not in g and outputs and all(isinstance(x, (int, float)) for x in outputs):
                outputs = [outputs]  # an old log-likelihood line: one list of scores
            indices = g.get("sample_indices", range(len(outputs)))
            reasons, info = g.get("finish_reasons") or [], g.get("info") or []
            for k, (i, output) in enumerate(zip(indices, outputs, strict=False)):
                out[(g["task"], g["task_id"], i)] = {
                    "prompt": g.get("prompt"), "output": output,
                    "finish_reason": reasons[k] if k < len(reasons) else None,
                    "info": info[k] if k < len(info) else {},
                }
        return out

    def samples(self) -> dict[tuple[str, str, int], dict]:
        """Scored samples, keyed by (task, task_id, sample_index); a later line for a sample replaces an
        earlier one (a resume that re-did an "error" sample)."""
        return {(s["task"], s["task_id"], s["sample_index"]): s for s in _read_lines(self.path / "samples.jsonl")}

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

    @property
    def run_id(self) -> str:
        return self.results.get("run_id", self.path.name)

    @property
    def model(self) -> str:
        return self.results.get("model", "?")

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

    def samples(self, task: str) -> list[dict]:
        """The task's scored samples, ordered by problem and sample index."""
        if self._samples is None:
            self._samples = list(RunStore(self.path).samples().values())
        rows = [s for s in self._samples if s["task"] == task]
        return sorted(rows, key=lambda s: (natural_key(s["task_id"]), s["sample_index"]))


def natural_key(task_id: object) -> tuple:
    """Sort key that puts HumanEval/2 before HumanEval/10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(task_id)))


def load_run(path: str | Path) -> Run:
    """Read a finished run folder (or the results.json inside one)."""
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
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunStoreError(f"{results_file} is not valid JSON ({e.msg})") from None
    if not isinstance(results, dict) or not isinstance(results.get("tasks"), dict):
        raise RunStoreError(f"{results_file} has no per-task results")
    return Run(path, results)
