"""Run one evaluation's shards as Ray tasks on an existing Ray cluster, then merge them (`evalkit run --ray`).

Each shard is one Ray *task* (never an actor: an actor holds its CPU for life, and more actors than CPUs
wait forever), asking for a GPU when the model runs in-process (native and `hf:` models) and for CPUs
otherwise (`openai:`, `replay:`, `reference`), one per sandbox worker. A shard is an ordinary shard run
(`evalkit.shard`): its folder logs every finished sample, so a task that Ray retries after its node was
lost resumes that folder and redoes nothing it had logged.

Layout: OUTPUT_PATH/<run-id>/ becomes the run folder (the merged run.json, generations.jsonl, samples.jsonl
and results.json), with the shards in OUTPUT_PATH/<run-id>/shards/shard-K-of-N/. When the workers can
reach that folder (a shared file system), shards write there; when they cannot (detected per task), a
shard writes on its node and its records come back to the driver, which writes them there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from evalkit.backends import BACKENDS, split_spec
from evalkit.errors import EvalkitError
from evalkit.merge import merge_shards
from evalkit.provenance import new_run_id
from evalkit.runner import RunInterrupted, RunOptions, check_output_path, run_evaluation
from evalkit.shard import Shard
from evalkit.store import RunStore

LOG_FILES = ("run.json", "generations.jsonl", "samples.jsonl", "results.json")
# A retried task may start while the killed attempt's process is still being torn down and holds the shard
# folder's lock; the kernel drops it when that process exits, normally within seconds.
LOCK_WAIT_S = 120.0
MAX_RETRIES = 3


class ShardFailed(EvalkitError, RuntimeError):
    """A shard task failed for a reason Ray does not retry (bad input, a sandbox engine that stayed away)."""


def shard_resources(model: str, sandbox_workers: int | None) -> dict[str, float]:
    """What one shard task asks Ray for: a GPU for models that run in the task's process, and a CPU per sandbox
    worker (one by default)."""
    backend, _ = split_spec(model)
    in_process = backend not in (BACKENDS["reference"], BACKENDS["replay:"], BACKENDS["openai:"])
    return {"num_cpus": float(sandbox_workers or 1), "num_gpus": 1.0 if in_process else 0.0}


def _sees(parent: Path, run_id: str) -> bool:
    """Whether this node sees the driver's run folder (a file system shared with the driver)."""
    try:
        return RunStore(parent).load_run_info(require_config=False).get("run_id") == run_id
    except EvalkitError:
        return False


def run_shard(record: dict, shard: str, parent: str, run_id: str, shared: bool | None) -> dict:
    """The body of one Ray task: evaluate one shard; return where it is, or its records when the driver's
    folder is out of this node's reach."""
    parent_path = Path(parent)
    if shared is None:
        shared = _sees(parent_path, run_id)
    out = parent_path / "shards" if shared else Path(tempfile.gettempdir()) / "evalkit-ray" / run_id
    opts = dataclasses.replace(RunOptions.from_record(record), shard=Shard.parse(shard), output_dir=out,
                               lock_wait=LOCK_WAIT_S)
    try:
        path, _ = run_evaluation(opts, progress=False, log=lambda _m: None)
    except RunInterrupted as e:  # its cause may not survive pickling back to the driver: keep the words
        raise ShardFailed(f"shard {shard} stopped: {type(e.cause).__name__}: {e.cause}") from None
    except EvalkitError as e:
        raise ShardFailed(f"shard {shard}: {e}") from None
    if shared:
        return {"path": str(path)}
    files = {name: (path / name).read_bytes() for name in LOG_FILES if (path / name).exists()}
    shutil.rmtree(path, ignore_errors=True)  # the shard is finished: Ray does not run a finished task again
    return {"files": files}


def _import_ray():
    try:
        import ray
    except ImportError:
        raise EvalkitError("--ray needs Ray on this machine and every node: pip install 'evalkit[ray]'") from None
    return ray


def run_on_ray(opts: RunOptions, shards: int, address: str | None = None, log: Callable[[str], None] = print,
               shared: bool | None = None, max_retries: int = MAX_RETRIES) -> tuple[Path, dict]:
    """Evaluate `opts` as `shards` Ray tasks on the cluster at `address` (None: $RAY_ADDRESS, else a local one),
    merge them, and return the run folder and its results. `shared` forces (True) or rules out (False) writing
    the shards straight into the run folder; None decides per task. `opts.resume` continues a Ray run."""
    ray = _import_ray()
    if shards < 1:
        raise EvalkitError("--shards must be at least 1")
    store, run_id = _open_parent(opts, shards, address, log)
    parent = store.path.resolve()
    record = dataclasses.replace(opts, resume=None, shard=None).record()
    resources = shard_resources(opts.model, opts.sandbox_workers)
    refs: dict = {}
    try:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # else Ray 2.60 prints a token-auth notice on start
        ray.init(address=address, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False,
                 logging_level=logging.WARNING)
        if resources["num_gpus"] and not ray.cluster_resources().get("GPU"):
            if opts.backend_options.get("device") == "cuda":
                raise EvalkitError("--device cuda, but the Ray cluster has no GPU")
            resources["num_gpus"] = 0.0  # a CPU-only cluster: asking for a GPU would leave the tasks waiting forever
            log("the Ray cluster has no GPU: the model runs on the nodes' CPUs")
        task = ray.remote(run_shard).options(max_retries=max_retries, retry_exceptions=False, **resources)
        refs = {task.remote(record, f"{k}/{shards}", str(parent), run_id, shared): k for k in range(shards)}
        log(f"{shards} shard tasks submitted to Ray ({', '.join(f'{k}={v:g}' for k, v in resources.items())} each)")
        pending = list(refs)
        while pending:
            # short waits, so Ctrl-C reaches the driver while the tasks run
            done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in done:
                _collect(ray, ref, Shard(refs[ref], shards), parent, log)
        dirs = [parent / "shards" / Shard(k, shards).folder_name for k in range(shards)]
        return merge_shards(parent, dirs, log, store=store)
    except (KeyboardInterrupt, ShardFailed, OSError) as e:
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        with contextlib.suppress(OSError, EvalkitError):
            store.set_status("interrupted", stopped=dt.datetime.now().isoformat(), reason=f"{type(e).__name__}: {e}")
        raise RunInterrupted(parent, e) from e
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        store.unlock()


def _collect(ray, ref, shard: Shard, parent: Path, log: Callable[[str], None]) -> None:
    """A finished shard task's outcome: nothing to do when it wrote into the run folder, else write its records."""
    try:
        out = ray.get(ref)
    except ShardFailed:
        raise
    except ray.exceptions.RayError as e:
        raise ShardFailed(f"shard {shard} failed: {str(e).strip().splitlines()[-1]}") from None
    if "files" in out:
        folder = parent / "shards" / shard.folder_name
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in out["files"].items():
            (folder / name).write_bytes(data)
    log(f"shard {shard} finished")


def _open_parent(opts: RunOptions, shards: int, address: str | None,
                 log: Callable[[str], None]) -> tuple[RunStore, str]:
    """The Ray run's folder, locked by the driver: new, or the one `opts.resume` names."""
    if opts.resume is not None:
        store = RunStore(opts.resume)
        info = store.load_run_info(require_config=False)
        recorded = info.get("ray")
        if not isinstance(recorded, dict):
            raise EvalkitError(f"{opts.resume} is not a Ray run folder; resume it without --ray")
        if recorded.get("shards") != shards:
            raise EvalkitError(f"{opts.resume} was cut into {recorded.get('shards')} shards, not {shards}")
        store.lock()
        store.set_status("running", resumed=dt.datetime.now().isoformat())
        log(f"resuming the Ray run {opts.resume}")
        return store, str(info["run_id"])
    check_output_path(opts.output_dir)
    run_id = new_run_id(opts.model)
    store = RunStore(Path(opts.output_dir) / run_id)
    store.create({"run_id": run_id, "status": "running", "started": dt.datetime.now().isoformat(),
                  "run_options": dataclasses.replace(opts, shard=None).record(),
                  "ray": {"shards": shards, "address": address}})
    log(f"run {run_id} -> {store.path} (shards in {store.path / 'shards'})")
    return store, run_id
