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
from collections.abc import Iterator
from pathlib import Path


class RunStoreError(RuntimeError):
    pass


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

    def generations(self) -> dict[tuple[str, str], dict]:
        """Finished generations, keyed by (task, task_id)."""
        return {(g["task"], g["task_id"]): g for g in _read_lines(self.path / "generations.jsonl")}

    def samples(self) -> dict[tuple[str, str, int], dict]:
        """Scored samples, keyed by (task, task_id, sample_index)."""
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
