"""Join shard run folders into one run folder, as if the run had never been cut.

Merging is a pure function of the shard folders, and it refuses rather than guesses:

- shards of different experiments (`evalkit.experiment.same_experiment`, model identity included), of
  different splits (K/N with different N) or of different problem sets;
- an incomplete set: every problem of every task must have all its samples, and the message names the
  missing problems and their shards (a lost middle shard never silently truncates the results);
- conflicting duplicates: one sample with another completion or verdict in two folders (a shard run twice
  is fine when both runs agree; a judged sample replaces an `error` one).

The merged folder holds generations.jsonl and samples.jsonl in canonical order (tasks as run, problems in
dataset order, samples by index) and a results.json computed by the same code as any run
(`evalkit.runner.summarize_task`), so it equals the unsharded run's, timing aside.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from evalkit.data import DataConfig
from evalkit.errors import RunStoreError
from evalkit.experiment import same_experiment
from evalkit.requests import SamplingParams
from evalkit.runner import RunOptions, summarize_task
from evalkit.shard import ShardError, shard_of
from evalkit.store import RunStore, write_json_atomic
from evalkit.tasks import build_tasks

Key = tuple[str, str, int]  # (task, task_id, sample_index)
# Per-sample facts that differ between two runs of the same sample without changing it: how long it took.
TIMING_KEYS = frozenset({"duration", "elapsed", "latency", "latency_s", "seconds", "wall_s", "time_s", "started",
                         "finished", "attempts", "retries"})


def without_timing(value: object) -> object:
    """`value` with timing fields removed at every depth: what two equal samples have in common."""
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


# What makes a record the same sample: two runs of one sample may word an error differently (a temporary path in
# a traceback, an object address) or take another time, and are still the same judgement of the same text.
SAMPLE_IDENTITY = ("prompt", "completion", "program", "answer", "verdict", "passed")
GENERATION_IDENTITY = ("prompt", "output")


def _same_record(a: dict, b: dict, fields: tuple[str, ...]) -> bool:
    return all(json.dumps(a.get(f), sort_keys=True, default=str) == json.dumps(b.get(f), sort_keys=True, default=str)
               for f in fields)


@dataclass
class ShardFolder:
    path: Path
    info: dict
    index: int
    count: int
    problems: dict[str, list[str]]
    samples: dict[Key, dict]
    generations: dict[Key, dict]

    @property
    def name(self) -> str:
        return f"shard {self.index} of {self.count} ({self.path})"


def read_shard(path: Path) -> ShardFolder:
    """A shard folder's run.json and logs, read while holding its lock (so no writer is half-way through)."""
    store = RunStore(path)
    info = store.load_run_info()
    shard = info.get("shard")
    if not isinstance(shard, dict):
        raise ShardError(f"{path} is not a shard folder (its run.json records no shard; make shards with "
                         "`evalkit run --shard K/N`)")
    try:
        index, count = int(shard["index"]), int(shard["count"])
        problems = {str(t): [str(i) for i in ids] for t, ids in shard["problems"].items()}
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ShardError(f"{path / 'run.json'}: its `shard` section is damaged") from None
    try:
        store.lock()
    except RunStoreError as e:
        raise ShardError(f"{path} is still being written ({e}); merge it once it has finished") from None
    try:
        samples, generations = store.samples(), store.generations()
    finally:
        store.unlock()
    return ShardFolder(Path(path), info, index, count, problems, samples, generations)


def _check_same_experiment(folders: Sequence[ShardFolder]) -> None:
    first = folders[0]
    for other in folders[1:]:
        if other.count != first.count:
            raise ShardError(f"{other.path} is shard {other.index} of {other.count}, but {first.path} is one of "
                             f"{first.count}: merge shards of one split")
        if diff := same_experiment(first.info["config"], other.info["config"], include_identity=True):
            shown = ", ".join(diff[:6]) + (" ..." if len(diff) > 6 else "")
            raise ShardError(f"{other.path} is not a shard of the same experiment as {first.path}; these settings "
                             f"differ: {shown}")
        if other.problems != first.problems:
            raise ShardError(f"{other.path} and {first.path} were cut from different problem sets (a different "
                             "--limit or dataset)")


def _collect(folders: Sequence[ShardFolder], attr: str) -> dict[Key, tuple[dict, ShardFolder]]:
    """Every folder's records of one log, checked: each in its own shard, duplicates identical."""
    out: dict[Key, tuple[dict, ShardFolder]] = {}
    for folder in folders:
        for key, record in getattr(folder, attr).items():
            task, tid, index = key
            if tid not in folder.problems.get(task, ()) or shard_of(task, tid, folder.count) != folder.index:
                raise ShardError(f"{folder.path} holds {task} {tid}, which is not a problem of {folder.name}")
            if key not in out:
                out[key] = (record, folder)
                continue
            kept, where = out[key]
            if _same_record(kept, record, SAMPLE_IDENTITY if attr == "samples" else GENERATION_IDENTITY):
                continue
            if attr == "samples" and kept.get("verdict") == "error" and record.get("verdict") != "error":
                out[key] = (record, folder)  # judged in one attempt, not in the other: the judgement stands
                continue
            if attr == "samples" and record.get("verdict") == "error":
                continue
            what = f"judged {kept.get('verdict')} in one and {record.get('verdict')} in the other" \
                if attr == "samples" and kept.get("verdict") != record.get("verdict") else "recorded differently"
            raise ShardError(f"conflicting duplicates: {task} {tid} sample {index} is {what} ({where.path}, "
                             f"{folder.path}); remove the folder that is wrong, or run the shard again")
    return out


def _expected(folders: Sequence[ShardFolder]) -> dict[Key, int]:
    """Every sample the whole run must have, each with its shard."""
    first = folders[0]
    config = first.info["config"]
    n = int(config.get("sampling", {}).get("n", 1))
    varying: dict[str, int] = {}
    for f in folders:
        varying.update(f.info.get("samples_by_problem") or {})
    out: dict[Key, int] = {}
    for task, ids in first.problems.items():
        kind = config.get("tasks", {}).get(task, {}).get("kind", "generate")
        for tid in ids:
            for i in range(1 if kind == "loglikelihood" else varying.get(tid, n)):
                out[(task, tid, i)] = shard_of(task, tid, first.count)
    return out


def _missing_message(missing: list[Key], expected: dict[Key, int], folders: Sequence[ShardFolder]) -> str:
    problems = list(dict.fromkeys((t, tid) for t, tid, _ in missing))
    shown = ", ".join(f"{t} {tid}" for t, tid in problems[:8]) + (" ..." if len(problems) > 8 else "")
    count = folders[0].count
    lines = [f"the shards are incomplete: {len(missing)} samples of {len(problems)} problems are missing ({shown})"]
    for index in sorted({expected[k] for k in missing}):
        held = [f for f in folders if f.index == index]
        if not held:
            lines.append(f"shard {index} of {count}: no folder given (run it with --shard {index}/{count})")
        for f in held:
            command = "evalkit score" if f.info.get("status") == "generated" else "evalkit run --resume"
            lines.append(f"shard {index} of {count} ({f.path}) is unfinished (status {f.info.get('status', '?')}): "
                         f"continue it with: {command} {f.path}")
    return "\n  ".join(lines)


def _jsonl_atomic(path: Path, rows: list[dict]) -> None:
    """Write a whole log at once (tmp file, fsync, rename): a merge written again replaces, never appends."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def merge_shards(output: Path, shard_dirs: Sequence[Path], log: Callable[[str], None] = print,
                 store: RunStore | None = None) -> tuple[Path, dict]:
    """Merge `shard_dirs` into the new run folder `output` (or into `store`, a folder its caller made and locked:
    the Ray driver's); return it and its results."""
    if not shard_dirs:
        raise ShardError("give the shard folders to merge")
    folders = [read_shard(Path(d)) for d in dict.fromkeys(Path(d).resolve() for d in shard_dirs)]
    _check_same_experiment(folders)
    samples = _collect(folders, "samples")
    generations = _collect(folders, "generations")
    expected = _expected(folders)
    if missing := [k for k in expected if k not in samples]:
        raise ShardError(_missing_message(missing, expected, folders))
    if extra := [k for k in samples if k not in expected]:
        t, tid, i = extra[0]
        raise ShardError(f"{samples[extra[0]][1].path} holds {len(extra)} samples the run does not have "
                         f"(e.g. {t} {tid} sample {i})")

    first = folders[0]
    config = first.info["config"]
    recorded = RunOptions.from_record(first.info["run_options"], str(first.path / "run.json")) \
        if isinstance(first.info.get("run_options"), dict) else None
    if recorded is None:
        raise ShardError(f"{first.path / 'run.json'} does not record the run's options; it cannot be merged")
    tasks = build_tasks(list(first.problems), DataConfig(), recorded.prompt, recorded.chat, recorded.task_options)
    sampling = SamplingParams(**config["sampling"])
    order = {task: {tid: k for k, tid in enumerate(ids)} for task, ids in first.problems.items()}
    keys = sorted(expected, key=lambda k: (list(first.problems).index(k[0]), order[k[0]][k[1]], k[2]))

    run_id = output.name if store is None else store.path.name
    results: dict = {"run_id": run_id, "model": recorded.model, "tasks": {}, "config": config}
    for name, task in tasks.items():
        records = [samples[k][0] for k in keys if k[0] == name]
        results["tasks"][name] = summarize_task(task, records, len(first.problems[name]), sampling)

    if store is None:
        store = RunStore(output)
        store.create({"run_id": run_id, "status": "merging", "started": dt.datetime.now().isoformat()})
        own = True
    else:
        own = False
    try:
        _jsonl_atomic(store.path / "generations.jsonl", _generation_rows(keys, generations))
        _jsonl_atomic(store.path / "samples.jsonl", [samples[k][0] for k in keys])
        store.write_results(results)
        info = store.load_run_info(require_config=False)
        varying = {tid: n for f in folders for tid, n in (f.info.get("samples_by_problem") or {}).items()}
        info.update(status="finished", finished=dt.datetime.now().isoformat(), config=config,
                    run_options=dataclasses.replace(recorded, shard=None).record(),
                    merged_from=[{"path": str(f.path), "shard": f"{f.index}/{f.count}"} for f in folders],
                    error_samples=sum(t["verdicts"].get("error", 0) for t in results["tasks"].values()))
        if varying:
            info["samples_by_problem"] = varying
        write_json_atomic(store.config_path, info)
    finally:
        if own:
            store.unlock()
    log(f"merged {len(folders)} shard folders ({len(keys)} samples) into {store.path}")
    return store.path, results


def _generation_rows(keys: Sequence[Key], generations: dict[Key, tuple[dict, ShardFolder]]) -> list[dict]:
    """One generations.jsonl line per problem, its samples in index order (samples judged `error` have none)."""
    rows: list[dict] = []
    for task, tid, i in keys:
        if (task, tid, i) not in generations:
            continue
        entry = generations[(task, tid, i)][0]
        if not rows or (rows[-1]["task"], rows[-1]["task_id"]) != (task, tid):
            rows.append({"task": task, "task_id": tid, "prompt": entry.get("prompt"), "sample_indices": [],
                         "outputs": [], "finish_reasons": [], "info": []})
        row = rows[-1]
        row["sample_indices"].append(i)
        row["outputs"].append(entry["output"])
        row["finish_reasons"].append(entry.get("finish_reason"))
        row["info"].append(entry.get("info") or {})
    return rows
