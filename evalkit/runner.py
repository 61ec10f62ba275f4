"""The evaluation loop: task -> requests -> backend -> (sandbox) -> scorer -> results.

Work is logged as it finishes (see `evalkit.store`): generations first, then each scored sample, so a
resumed run neither regenerates nor re-executes anything that was done, and its results equal those
of an uninterrupted run. Samples the harness could not judge (verdict "error": a sandbox or server that
failed) are not finished work: a resume does them again.

Generation and execution overlap: while the backend generates the next batch, the sandbox executes the
samples already generated, so a run costs about the larger of the two, not their sum.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from evalkit.backends import Backend, resolve_backend
from evalkit.data import DataConfig
from evalkit.errors import RunStoreError
from evalkit.experiment import same_experiment
from evalkit.provenance import git_state, new_run_id, package_versions
from evalkit.requests import Completion, Failure, GenerationRequest, LoglikelihoodRequest, SamplingParams
from evalkit.sandbox import Sandbox, open_sandbox
from evalkit.sanitize import truncate_at_stop
from evalkit.store import RunStore
from evalkit.tasks import Doc, Scored, Task, build_tasks

Request = GenerationRequest | LoglikelihoodRequest


class RunInterrupted(Exception):
    """The run stopped part-way (Ctrl-C, a full disk); everything finished is saved in `path`."""

    def __init__(self, path: Path, cause: BaseException):
        super().__init__(str(cause))
        self.path = path
        self.cause = cause


@dataclass
class RunOptions:
    """Everything `evalkit run` was asked to do.

    `requests_per_call` is how many problems the runner hands the backend at once; how many sequences a
    model decodes together is a backend option (`backend_options["batch_size"]`).
    `prompt` is one variant for every task that has it, or {task: variant}; `task_options` maps an option
    name to a value for every task that takes it, or to {task: value}.
    """

    model: str
    tasks: list[str]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    limit: int | None = None
    output_dir: Path = Path("results/runs")
    resume: Path | None = None
    data: DataConfig = field(default_factory=DataConfig)
    requests_per_call: int = 8
    max_tokens: int | None = None
    unsafe_local: bool = False
    sandbox_workers: int | None = None
    backend_options: dict = field(default_factory=dict)
    prompt: str | dict | None = None
    chat: bool = False
    task_options: dict = field(default_factory=dict)
    overlap: bool = True  # False: execute each batch before generating the next (benchmarks compare the two)


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def task_request(task: Task, doc: Doc, opts: RunOptions) -> Request:
    """The task's request for `doc`, with the run's max_tokens override."""
    req = task.request(doc)
    if isinstance(req, GenerationRequest) and opts.max_tokens and opts.max_tokens != req.max_tokens:
        req = dataclasses.replace(req, max_tokens=opts.max_tokens)
    return req


def describe_run(opts: RunOptions, tasks: dict[str, Task], docs: dict[str, list[Doc]], backend: Backend,
                 sandbox: Sandbox | None) -> dict:
    """The run's `config`: everything that moves a score, and where the run happened."""
    task_info = {}
    for name, task in tasks.items():
        sample_req = task_request(task, docs[name][0], opts) if docs[name] else None
        info = {
            "dataset": task.provenance,
            "n_docs": len(docs[name]),
            "kind": task.kind,
            "options": task.chosen(),
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


def sample_record(task: Task, doc: Doc, prompt: str, index: int, output, scored: Scored,
                  completion: Completion | None = None) -> dict:
    """One line of samples.jsonl."""
    return {
        "task": task.name,
        "task_id": doc["task_id"],
        "sample_index": index,
        "prompt": prompt,
        "completion": output,
        "program": scored.program,
        "answer": scored.answer,
        "verdict": scored.verdict,
        "passed": scored.passed,
        "error": scored.error,
        "extra": scored.extra,
        "finish_reason": completion.finish_reason if completion else None,
        "generation": completion.info if completion else {},
    }


class TaskEvaluation:
    """One task's share of a run: generate what is missing, score what is unscored, log each as it finishes.

    `generations` and `samples` are what the run folder already holds for this task, keyed by
    (task_id, sample_index). Sandbox executions run on a thread pool while the next batch is generated.
    """

    def __init__(self, task: Task, docs: list[Doc], backend: Backend, sandbox: Sandbox | None, store: RunStore,
                 opts: RunOptions, generations: dict[tuple[str, int], dict], samples: dict[tuple[str, int], dict],
                 progress: bool = True):
        self.task, self.docs, self.backend, self.sandbox, self.store, self.opts = task, docs, backend, sandbox, \
            store, opts
        self.n = opts.sampling.n if task.kind == "generate" else 1
        self.generations = generations
        self.samples = {k: s for k, s in samples.items() if s.get("verdict") != "error"}  # errors are redone
        self.requests = {d["task_id"]: task_request(task, d, opts) for d in docs}
        self.lock = threading.Lock()
        self.bar = tqdm(total=len(docs) * self.n, desc=task.name, unit="sample", disable=not progress,
                        dynamic_ncols=True)
        self.bar.update(sum(1 for d in docs for i in range(self.n) if (d["task_id"], i) in self.samples))
        parallel = task.uses_sandbox and sandbox is not None and sandbox.size > 1
        self.workers = sandbox.size if parallel else 1
        self.pool = ThreadPoolExecutor(max_workers=self.workers) if parallel else None
        self.pending: set[Future] = set()

    def run(self) -> list[dict]:
        try:
            todo_generate = []
            for doc in self.docs:
                tid = doc["task_id"]
                missing = [i for i in range(self.n) if (tid, i) not in self.samples]
                generated = [i for i in missing if (tid, i) in self.generations]
                self.score(doc, [(i, self.generations[(tid, i)]) for i in generated])
                if ungenerated := [i for i in missing if (tid, i) not in self.generations]:
                    todo_generate.append((doc, tuple(ungenerated)))
            for batch in _batches(todo_generate, max(1, self.opts.requests_per_call)):
                self.generate(batch)
                if not self.opts.overlap:
                    self.drain(0)
            self.drain(0)
        finally:
            for future in self.pending:
                future.cancel()
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
            self.bar.close()
        return sorted((self.samples[(d["task_id"], i)] for d in self.docs for i in range(self.n)),
                      key=lambda r: (r["task_id"], r["sample_index"]))

    def generate(self, batch: Sequence[tuple[Doc, tuple[int, ...]]]) -> None:
        """Ask the backend for the missing samples of a batch of problems, log them, and start scoring them."""
        requests = [self.requests[doc["task_id"]] for doc, _ in batch]
        if self.task.kind == "generate":
            requests = [dataclasses.replace(r, sample_indices=idx) for r, (_, idx) in zip(requests, batch,
                                                                                          strict=True)]
            outputs: list = self.backend.generate(requests, self.opts.sampling)
        else:
            outputs = self.backend.loglikelihood(requests)
        if len(outputs) != len(requests):
            raise RuntimeError(f"backend {self.backend.name} returned {len(outputs)} results for "
                               f"{len(requests)} requests")
        logged, failed = [], []
        for (doc, indices), req, out in zip(batch, requests, outputs, strict=True):
            tid = doc["task_id"]
            prompt = req.prompt if isinstance(req, GenerationRequest) else req.context
            produced = self._per_sample(req, indices, out)
            good = {i: c for i, c in produced.items() if c.error is None}
            failed += [(doc, prompt, i, c) for i, c in produced.items() if c.error is not None]
            if good:
                row = {"task": self.task.name, "task_id": tid, "prompt": prompt, "sample_indices": list(good),
                       "outputs": [c.text if isinstance(req, GenerationRequest) else c.info["scores"]
                                   for c in good.values()],
                       "finish_reasons": [c.finish_reason for c in good.values()],
                       "info": [c.info for c in good.values()]}
                logged.append(row)
        self.store.append("generations.jsonl", logged)
        for row in logged:
            doc = next(d for d, _ in batch if d["task_id"] == row["task_id"])
            entries = [(i, self._entry(row, k)) for k, i in enumerate(row["sample_indices"])]
            for i, entry in entries:
                self.generations[(row["task_id"], i)] = entry
            self.score(doc, entries)
        self.record([sample_record(self.task, doc, prompt, i, None,
                                   Scored("error", error=f"the backend could not produce this sample: {c.error}"), c)
                     for doc, prompt, i, c in failed])

    def _per_sample(self, req: Request, indices: tuple[int, ...], out) -> dict[int, Completion]:
        """The backend's answer for one request as {sample index: Completion} (log-likelihoods inside `info`)."""
        if isinstance(req, GenerationRequest):
            if len(out) != len(indices):
                raise RuntimeError(f"backend {self.backend.name} returned {len(out)} samples for {req.task_id}, "
                                   f"wanted {len(indices)}")
            return dict(zip(indices, out, strict=True))
        if isinstance(out, Failure):
            return {0: Completion("", error=out.error, info=out.info)}
        return {0: Completion("", info={"scores": list(out)})}

    @staticmethod
    def _entry(row: dict, k: int) -> dict:
        return {"prompt": row["prompt"], "output": row["outputs"][k],
                "finish_reason": (row.get("finish_reasons") or [None] * (k + 1))[k],
                "info": (row.get("info") or [{}] * (k + 1))[k]}

    def score(self, doc: Doc, entries: Sequence[tuple[int, dict]]) -> None:
        """Judge logged generations: on the sandbox pool when there is one, else here (scorers that use
        signal-based timeouts need the main thread). Each result is logged by whoever computed it, as soon as
        it is ready; a failure to log (a full disk) surfaces in the main thread at the next drain."""
        for index, entry in entries:
            if self.pool is None:
                self._score_and_record(doc, index, entry)
            else:
                self.drain(4 * self.workers)
                self.pending.add(self.pool.submit(self._score_and_record, doc, index, entry))

    def drain(self, bound: int) -> None:
        """Wait until at most `bound` executions are pending (a bounded queue), re-raising their failures."""
        while len(self.pending) > bound:
            done, _ = wait(self.pending, return_when="FIRST_COMPLETED")
            self.pending -= done
            for future in done:
                if future.exception() is not None:
                    raise future.exception()

    def _score_and_record(self, doc: Doc, index: int, entry: dict) -> None:
        self.record([self._score_one(doc, index, entry)])

    def _score_one(self, doc: Doc, index: int, entry: dict) -> dict:
        output = entry["output"]
        req = self.requests[doc["task_id"]]
        if isinstance(req, GenerationRequest):
            output = truncate_at_stop(output, req.stop)  # whichever backend made it, the task's stops apply
        try:
            scored = self.task.score(doc, output, self.sandbox)
        except Exception as e:  # a scorer bug on one sample is recorded, never a lost run
            scored = Scored(verdict="error", error=f"scorer raised {type(e).__name__}: {e}")
        completion = Completion(entry["output"] if isinstance(entry["output"], str) else "",
                                finish_reason=entry.get("finish_reason"), info=entry.get("info") or {})
        return sample_record(self.task, doc, entry["prompt"], index, entry["output"], scored, completion)

    def record(self, rows: list[dict]) -> None:
        if not rows:
            return
        with self.lock:
            self.store.append("samples.jsonl", rows)
            for r in rows:
                self.samples[(r["task_id"], r["sample_index"])] = r
            self.bar.update(len(rows))


def _of_task(logged: dict[tuple[str, str, int], dict], task: str) -> dict[tuple[str, int], dict]:
    return {(tid, i): v for (t, tid, i), v in logged.items() if t == task}


def summarize_task(task: Task, records: list[dict], n_docs: int, sampling: SamplingParams) -> dict:
    sampling_for_task = sampling if task.kind == "generate" else dataclasses.replace(sampling, n=1)
    summary = task.aggregate(records, sampling_for_task)
    summary["n"] = n_docs
    summary["samples_per_problem"] = sampling_for_task.n
    summary["verdicts"] = dict(sorted(Counter(r["verdict"] for r in records).items()))
    reasons = Counter(r.get("finish_reason") for r in records if r.get("finish_reason"))
    if reasons:
        summary["cut_by_max_tokens"] = reasons.get("length", 0) / sum(reasons.values())
    return summary


def open_store(opts: RunOptions, config: dict, log: Callable[[str], None]) -> tuple[RunStore, str]:
    """The run folder: a new one, or the one being resumed once its settings are checked."""
    if opts.resume:
        store = RunStore(opts.resume)
        saved = store.load_run_info()
        if diff := same_experiment(saved["config"], config):
            shown = ", ".join(diff[:8]) + (" ..." if len(diff) > 8 else "")
            raise RunStoreError(f"cannot resume {opts.resume}: these settings differ from the original run: {shown}. "
                                "Resume with the same options, or start a new run.")
        log(f"resuming {saved['run_id']} from {opts.resume}")
        return store, saved["run_id"]
    run_id = new_run_id(opts.model)
    store = RunStore(Path(opts.output_dir) / run_id)
    store.create({"run_id": run_id, "status": "running", "started": dt.datetime.now().isoformat(), "config": config})
    log(f"run {run_id} -> {store.path}")
    return store, run_id


def run_evaluation(opts: RunOptions, backend: Backend | None = None, progress: bool = True,
                   log: Callable[[str], None] = print) -> tuple[Path, dict]:
    """Evaluate `opts.model` on `opts.tasks`; return the run folder and results.json's content."""
    tasks = build_tasks(opts.tasks, opts.data, opts.prompt, opts.chat, opts.task_options, note=log)
    docs, known_ids = {}, {}
    for name, task in tasks.items():
        rows = task.docs()
        known_ids[name] = {d["task_id"] for d in rows}
        docs[name] = rows[: opts.limit] if opts.limit else rows
    backend = backend or resolve_backend(opts.model, known_ids=known_ids, **opts.backend_options)
    if backend.samples_per_problem and backend.samples_per_problem != opts.sampling.n:
        # a replay file decides how many samples there are
        opts = dataclasses.replace(opts, sampling=dataclasses.replace(opts.sampling, n=backend.samples_per_problem))
    if backend.draws_samples and opts.sampling.temperature == 0 and opts.sampling.n > 1:
        log(f"warning: {opts.sampling.n} samples per problem at temperature 0 are identical greedy samples")
    needs_sandbox = any(t.uses_sandbox for t in tasks.values())
    sandbox = open_sandbox(unsafe_local=opts.unsafe_local, workers=opts.sandbox_workers) if needs_sandbox else None
    try:
        config = describe_run(opts, tasks, docs, backend, sandbox)
        store, run_id = open_store(opts, config, log)
        results: dict = {"run_id": run_id, "model": opts.model, "tasks": {}, "config": config}
        generations, samples = store.generations(), store.samples()  # read once: what a resumed run already has
        try:
            for name, task in tasks.items():
                evaluation = TaskEvaluation(task, docs[name], backend, sandbox, store, opts,
                                            _of_task(generations, name), _of_task(samples, name), progress)
                records = evaluation.run()
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
