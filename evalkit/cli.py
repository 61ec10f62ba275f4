"""The `evalkit` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from evalkit.errors import EvalkitError

app = typer.Typer(
    help="Evaluate code and math models on HumanEval, MBPP, CRUXEval, Spider, MATH, GSM8K, MMLU and AIME 2024.\n\n"
    "Generated code runs only inside a Docker sandbox. Every setting that moves a score is recorded in "
    "the run folder's results.json.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
sandbox_app = typer.Typer(help="Build and check the Docker sandbox that runs generated code.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")


def fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


MODEL, TASKS, SAMPLING, DATA, EXECUTION, OUTPUT = "Model", "Tasks and prompts", "Sampling", "Data", "Execution", \
    "Output"
SCALE = "Shards, phases and Ray"


def _probability(value: float) -> float:
    if not 0.0 < value <= 1.0:
        raise typer.BadParameter(f"{value} is not in (0, 1]")
    return value


def _deprecated(old: str, new: str) -> None:
    typer.secho(f"note: {old} is deprecated; use {new}", fg=typer.colors.YELLOW, err=True)


@app.command()
def run(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(rich_help_panel=MODEL, help=(
        "`reference` (canonical solutions: the harness self-check), `replay:FILE.jsonl` (completions made "
        "elsewhere), `openai:BASE_URL` (an OpenAI-compatible server), `hf:PATH_OR_REPO` (a transformers "
        "checkpoint), a model name (codestral-mamba, mistral-7b, mathstral, ...) or a checkpoint folder. "
        "Optional with --resume, which reads it from the run folder."))] = "",
    tasks: Annotated[str, typer.Option(rich_help_panel=TASKS, help=(
        "Comma-separated task names; `evalkit tasks` lists them. Optional with --resume."))] = "",
    batch_size: Annotated[int | None, typer.Option(
        min=1, rich_help_panel=MODEL, help="Sequences the model decodes together (lm-eval's --batch_size); "
        "the backend's default when unset. Outputs do not depend on it.")] = None,
    dtype: Annotated[str | None, typer.Option(rich_help_panel=MODEL, help=(
        "float32, bfloat16, float16 or auto (the checkpoint's). Default: the checkpoint's for native models; "
        "float32 on CPU and bfloat16 on GPU for hf:."))] = None,
    device: Annotated[str | None, typer.Option(rich_help_panel=MODEL, help=(
        "cpu, cuda or cuda:N (native and hf: models; default cuda when there is one)."))] = None,
    tokenizer: Annotated[str | None, typer.Option(rich_help_panel=MODEL, help=(
        "Override the checkpoint's tokenizer (native and hf:): a Mistral version that mistral-common ships "
        "(v1, v2, v3, v3-tekken, v7), a tokenizer file (tokenizer.model.v3, tekken.json), or a folder or hub "
        "id (hf:)."))] = None,
    revision: Annotated[str | None, typer.Option(rich_help_panel=MODEL, help=(
        "Hub branch, tag or commit of an hf:ORG/NAME model."))] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", rich_help_panel=MODEL, help=(
        "Let an hf: checkpoint run the model code it ships (off by default: that code runs on this machine)."
    ))] = False,
    served_model: Annotated[str | None, typer.Option(rich_help_panel=MODEL, help=(
        "openai: the model name to send; needed only when the server's /v1/models lists several."))] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, rich_help_panel=MODEL, help=(
        "openai: requests in flight at once (default 8). Raise --requests-per-call with it: no more requests "
        "than the problems of one call (times their samples) are in flight."))] = None,
    request_timeout: Annotated[float | None, typer.Option(min=0.001, rich_help_panel=MODEL, help=(
        "openai: seconds one request may take (default 60 + 0.25 per max_tokens)."))] = None,
    max_retries: Annotated[int | None, typer.Option(min=0, rich_help_panel=MODEL, help=(
        "openai: retries of a request after connection errors, timeouts, 408, 409, 429 and 5xx, with "
        "exponential backoff and jitter, honouring Retry-After (default 6); a request that still fails is an "
        "`error` sample, done again by --resume."))] = None,
    n_per_request: Annotated[bool, typer.Option("--n-per-request", rich_help_panel=MODEL, help=(
        "openai: ask for a problem's samples with `n` in one request instead of one request per sample "
        "(faster; the samples are then seeded together, not one by one)."))] = False,
    chat_format: Annotated[str | None, typer.Option(rich_help_panel=MODEL, help=(
        "openai with --chat: render chat prompts with evalkit's format (mistral-v3, mistral-v1, or hf:PATH for "
        "a tokenizer's chat template) and send the token ids to /v1/completions, instead of leaving the "
        "template to the server's /v1/chat/completions."))] = None,
    max_stop_sequences: Annotated[int | None, typer.Option(min=1, rich_help_panel=MODEL, help=(
        "openai: send at most N of a task's stop strings (OpenAI's hosted API takes 4; HumanEval has 5). All of "
        "them still cut the returned text, so scores do not change; the server only generates past the unsent "
        "ones."))] = None,
    limit: Annotated[int | None, typer.Option(min=1, rich_help_panel=TASKS,
                                              help="Evaluate only the first N problems of each task.")] = None,
    prompt: Annotated[str | None, typer.Option(rich_help_panel=TASKS, help=(
        "Prompt variant for the tasks that have several (`evalkit tasks` lists them, e.g. `boxed` for math, "
        "`zero-shot` for mbpp), or per task: `math=minerva,mbpp=zero-shot`."))] = None,
    chat: Annotated[bool, typer.Option(rich_help_panel=TASKS, help=(
        "Prompt as an instruct model: render each task's chat variant with the model's chat format."))] = False,
    system_prompt: Annotated[str | None, typer.Option(rich_help_panel=TASKS, help=(
        "With --chat: a system message put first in every task's conversation (lm-eval's "
        "--system_instruction). Recorded with each task; runs with another system prompt do not compare."
    ))] = None,
    task_option: Annotated[list[str] | None, typer.Option(rich_help_panel=TASKS, help=(
        "A task setting, KEY=VALUE for every task that takes KEY or TASK:KEY=VALUE for one (e.g. "
        "`timeout=30`); `evalkit tasks` lists each task's options. Repeatable."))] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, rich_help_panel=TASKS,
                                                   help="Override each task's generation length limit.")] = None,
    n_samples: Annotated[int, typer.Option(min=1, rich_help_panel=SAMPLING, help=(
        "Samples per problem (evalplus' n_samples); pass@k is reported for k <= n."))] = 1,
    samples: Annotated[int | None, typer.Option(min=1, hidden=True, help="Deprecated: --n-samples.")] = None,
    temperature: Annotated[float, typer.Option(min=0.0, rich_help_panel=SAMPLING,
                                               help="Sampling temperature; 0 is greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(callback=_probability, rich_help_panel=SAMPLING,
                                         help="Nucleus sampling threshold, in (0, 1].")] = 1.0,
    seed: Annotated[int, typer.Option(rich_help_panel=SAMPLING, help=(
        "Run seed; each sample's seed derives from it, the problem and the sample index, so resumed runs "
        "draw the same samples."))] = 1234,
    data_dir: Annotated[str | None, typer.Option(rich_help_panel=DATA, help=(
        "Local benchmark mirror (default: $EVALKIT_DATA_DIR; without one, data comes from the Hugging Face "
        "hub)."))] = None,
    hub: Annotated[bool, typer.Option(rich_help_panel=DATA, help=(
        "Load data from the Hugging Face hub even where a package bundles a copy (HumanEval)."))] = False,
    dataset_revision: Annotated[str | None, typer.Option(rich_help_panel=DATA,
                                                         help="Pin the hub dataset revision.")] = None,
    spider_db_dir: Annotated[Path | None, typer.Option(rich_help_panel=DATA, help=(
        "Folder with database/<db_id>/<db_id>.sqlite (the official Spider download)."))] = None,
    sandbox_workers: Annotated[int | None, typer.Option(min=1, rich_help_panel=EXECUTION,
                                                        help="Sandbox containers (default: CPU count).")] = None,
    requests_per_call: Annotated[int, typer.Option(min=1, rich_help_panel=EXECUTION, help=(
        "Problems handed to the backend at once; their samples are executed while the next ones are "
        "generated."))] = 8,
    unsafe_local_execution: Annotated[bool, typer.Option(
        "--unsafe-local-execution", rich_help_panel=EXECUTION,
        help="Run generated code on this machine WITHOUT a sandbox. Only for completions you trust.")] = False,
    output_path: Annotated[Path, typer.Option("--output-path", "-o", rich_help_panel=OUTPUT,
                                              help="Where run folders are created.")] = Path("results/runs"),
    output_dir: Annotated[Path | None, typer.Option(hidden=True, help="Deprecated: --output-path.")] = None,
    resume: Annotated[Path | None, typer.Option(rich_help_panel=OUTPUT, help=(
        "Continue the run in this folder with its recorded settings (`--resume DIR` alone is enough; options "
        "given as well must match the run): finished samples are neither regenerated nor re-executed; samples "
        "that ended in `error` are done again."))] = None,
    allow_errors: Annotated[bool, typer.Option(rich_help_panel=OUTPUT, help=(
        "Exit 0 even when some samples ended in `error` (the harness could not judge them); by default such a "
        "run says how many and why, and exits 3."))] = False,
    shard: Annotated[str | None, typer.Option(rich_help_panel=SCALE, help=(
        "Evaluate only shard K of N (0 <= K < N): the problems whose stable hash of (task, task id) falls in it, "
        "into OUTPUT_PATH/shard-K-of-N (resumed if it exists). `evalkit merge` joins the shards."))] = None,
    generate_only: Annotated[bool, typer.Option(rich_help_panel=SCALE, help=(
        "Write the generations and stop (no sandbox needed); `evalkit score RUN_DIR` executes and scores them "
        "later, elsewhere."))] = False,
    ray: Annotated[bool, typer.Option(rich_help_panel=SCALE, help=(
        "Run --shards shards as Ray tasks on an existing Ray cluster ($RAY_ADDRESS, or --ray-address; without "
        "either, a local one), then merge them; needs `pip install 'evalkit\\[ray]'`. --output-path must be "
        "reachable from every node, or the shards' records come back to this process."))] = False,
    ray_address: Annotated[str | None, typer.Option(rich_help_panel=SCALE, help=(
        "The Ray cluster to use (e.g. 10.0.0.1:6379); implies --ray."))] = None,
    shards: Annotated[int | None, typer.Option(min=1, rich_help_panel=SCALE, help=(
        "With --ray: how many shards (Ray tasks) to cut the problems into."))] = None,
    progress: Annotated[bool, typer.Option(rich_help_panel=OUTPUT, help="Show progress bars.")] = True,
) -> None:
    """Evaluate a model on tasks and write a run folder (results.json, samples.jsonl)."""
    from evalkit.data import DataConfig
    from evalkit.requests import SamplingParams
    from evalkit.runner import RunOptions, resumed_options
    from evalkit.shard import Shard

    if samples is not None:
        _deprecated("--samples", "--n-samples")
        n_samples = samples
    if output_dir is not None:
        _deprecated("--output-dir", "--output-path")
        output_path = output_dir
    explicit = {fld for param, fld in RUN_OPTION_FIELDS.items() if _given(ctx, param)}
    try:
        data = DataConfig.from_options(data_dir, hub=hub, revision=dataset_revision, spider_db_dir=spider_db_dir)
        given = RunOptions(
            model=model, tasks=comma_list(tasks), limit=limit, output_dir=output_path,
            sampling=SamplingParams(n=n_samples, temperature=temperature, top_p=top_p, seed=seed),
            data=data, requests_per_call=requests_per_call, max_tokens=max_tokens,
            unsafe_local=unsafe_local_execution, sandbox_workers=sandbox_workers, prompt=parse_per_task(prompt),
            chat=chat, system_prompt=system_prompt, task_options=parse_task_options(task_option or []),
            backend_options={"dtype": dtype, "device": device, "batch_size": batch_size, "served_model": served_model,
                             "concurrency": concurrency, "request_timeout": request_timeout,
                             "max_retries": max_retries, "n_per_request": n_per_request or None,
                             "chat_format": chat_format, "max_stop_sequences": max_stop_sequences,
                             "tokenizer": tokenizer, "revision": revision,
                             "trust_remote_code": trust_remote_code or None},
            shard=Shard.parse(shard) if shard else None, generate_only=generate_only,
        )
        opts = resumed_options(resume, given, explicit) if resume is not None else given
        ray = ray or ray_address is not None
        if resume is not None and not ray:  # a Ray run continues on Ray, with its recorded shards
            from evalkit.store import RunStore

            recorded = RunStore(resume).load_run_info(require_config=False).get("ray")
            if isinstance(recorded, dict):
                ray, shards = True, shards or recorded.get("shards")
                ray_address = ray_address or recorded.get("address")
    except EvalkitError as e:
        fail(str(e))
    if not opts.model or not opts.tasks:
        fail("--model and --tasks are required (`evalkit tasks` lists the tasks)")
    if shards is not None and not ray:
        fail("--shards N goes with --ray; to run one shard yourself, use --shard K/N")
    if ray:
        if opts.shard is not None or opts.generate_only:
            fail("--ray runs every shard itself, with scoring: leave out --shard and --generate-only")
        from evalkit.ray_runner import run_on_ray

        _evaluate_and_report(lambda: run_on_ray(opts, shards or 1, ray_address,
                                                log=lambda m: typer.echo(m, err=True)), allow_errors)
        return
    from evalkit.runner import run_evaluation

    _evaluate_and_report(lambda: run_evaluation(opts, progress=progress, log=lambda m: typer.echo(m, err=True)),
                         allow_errors)


# `evalkit run` parameters -> the RunOptions field they set (`sampling.X` for sampling), for --resume: options
# given on the command line replace the recorded ones; the others keep the recorded values.
RUN_OPTION_FIELDS = {
    "model": "model", "tasks": "tasks", "limit": "limit", "prompt": "prompt", "chat": "chat",
    "system_prompt": "system_prompt",
    "task_option": "task_options", "max_tokens": "max_tokens", "n_samples": "sampling.n", "samples": "sampling.n",
    "temperature": "sampling.temperature", "top_p": "sampling.top_p", "seed": "sampling.seed", "data_dir": "data",
    "hub": "data", "dataset_revision": "data", "spider_db_dir": "data", "sandbox_workers": "sandbox_workers",
    "requests_per_call": "requests_per_call", "unsafe_local_execution": "unsafe_local", "shard": "shard",
    "generate_only": "generate_only",
}


def _given(ctx: typer.Context, param: str) -> bool:
    """Whether the user set `param` (on the command line or through its environment variable)."""
    source = ctx.get_parameter_source(param)  # compared by name: typer ships its own copy of click's enum
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _evaluate_and_report(evaluate, allow_errors: bool) -> None:
    """Run `evaluate` (-> run folder, results or None), print the outcome, and exit with its status:
    0 done, 1 stopped by a fault (resumable), 2 bad input, 3 samples ended in `error`, 130/143 Ctrl-C/SIGTERM."""
    from evalkit.runner import RunInterrupted, Terminated, error_summary, sigterm_as_interrupt
    from evalkit.store import RunStore

    try:
        with sigterm_as_interrupt():
            path, results = evaluate()
    except RunInterrupted as e:
        cause = e.cause
        what = "stopped by SIGTERM" if isinstance(cause, Terminated) else \
            "interrupted" if isinstance(cause, KeyboardInterrupt) else f"stopped ({type(cause).__name__}: {cause})"
        typer.secho(f"\n{what}. Finished samples are saved in {e.path}; continue with: evalkit run --resume {e.path}",
                    fg=typer.colors.YELLOW, err=True)
        code = 143 if isinstance(cause, Terminated) else 130 if isinstance(cause, KeyboardInterrupt) else 1
        raise typer.Exit(code) from None
    except EvalkitError as e:
        fail(str(e))
    if results is None:
        typer.echo(f"generations written to {path}; execute and score them with: evalkit score {path}")
        return
    typer.echo(format_results(results))
    typer.echo(f"\nwrote {path / 'results.json'} and {path / 'samples.jsonl'}")
    errors = sum(info.get("verdicts", {}).get("error", 0) for info in results["tasks"].values())
    if errors:
        why = error_summary(list(RunStore(path).samples().values()))
        typer.secho(f"{errors} samples ended in `error`: the harness could not judge them, so the scores above "
                    f"count them as not passed ({why}). `evalkit run --resume {path}` does them again"
                    + ("." if allow_errors else "; --allow-errors accepts them and exits 0."),
                    fg=typer.colors.YELLOW, err=True)
        if not allow_errors:
            raise typer.Exit(3)


@app.command()
def score(
    run_dir: Annotated[Path, typer.Argument(help="Run folder written by `evalkit run --generate-only`.",
                                            show_default=False)],
    sandbox_workers: Annotated[int | None, typer.Option(min=1, rich_help_panel=EXECUTION,
                                                        help="Sandbox containers (default: CPU count).")] = None,
    unsafe_local_execution: Annotated[bool, typer.Option(
        "--unsafe-local-execution", rich_help_panel=EXECUTION,
        help="Run generated code on this machine WITHOUT a sandbox. Only for completions you trust.")] = False,
    data_dir: Annotated[str | None, typer.Option(rich_help_panel=DATA, help=(
        "Local benchmark mirror, where the recorded one is not on this machine (default: $EVALKIT_DATA_DIR)."))] = None,
    allow_errors: Annotated[bool, typer.Option(rich_help_panel=OUTPUT,
                                               help="Exit 0 even when some samples ended in `error`.")] = False,
    progress: Annotated[bool, typer.Option(rich_help_panel=OUTPUT, help="Show progress bars.")] = True,
) -> None:
    """Execute and score the generations of a run (the second phase of `evalkit run --generate-only`).

    Needs no model: the generations are in the run folder. Interrupted, it continues where it stopped when run
    again; samples the backend failed on stay `error` until `evalkit run --resume RUN_DIR` generates them.
    """
    import dataclasses

    from evalkit.data import DataConfig
    from evalkit.runner import RunOptions, resumed_options, run_evaluation

    try:
        given = RunOptions(model="", tasks=[], sandbox_workers=sandbox_workers, unsafe_local=unsafe_local_execution,
                           data=DataConfig.from_options(data_dir) if data_dir else DataConfig(), score_only=True)
        explicit = {"sandbox_workers"} if sandbox_workers else set()
        explicit |= {"unsafe_local"} if unsafe_local_execution else set()
        explicit |= {"data"} if data_dir else set()
        opts = dataclasses.replace(resumed_options(run_dir, given, explicit), generate_only=False)
    except EvalkitError as e:
        fail(str(e))
    _evaluate_and_report(lambda: run_evaluation(opts, progress=progress, log=lambda m: typer.echo(m, err=True)),
                         allow_errors)


@app.command()
def merge(
    output: Annotated[Path, typer.Argument(help="The merged run folder to create.", show_default=False)],
    shard_dirs: Annotated[list[Path], typer.Argument(help="Shard run folders (`evalkit run --shard K/N`).",
                                                     show_default=False)],
    allow_errors: Annotated[bool, typer.Option(help="Exit 0 even when some samples ended in `error`.")] = False,
) -> None:
    """Join shard run folders into one run folder whose results equal those of the unsharded run.

    Refuses shards of different experiments, a set that misses problems (naming them and their shards), and
    two shards that judged the same sample differently. Identical duplicates (a shard run twice) are fine.
    """
    from evalkit.merge import merge_shards

    _evaluate_and_report(lambda: merge_shards(output, shard_dirs, log=lambda m: typer.echo(m, err=True)),
                         allow_errors)


def comma_list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def parse_per_task(value: str | None) -> str | dict[str, str] | None:
    """`X` applies to every task; `task=X,task2=Y` to the named tasks."""
    if value is None or "=" not in value:
        return value
    pairs = [item.split("=", 1) for item in value.split(",") if item.strip()]
    if any(len(p) != 2 or not p[0].strip() for p in pairs):
        fail(f"cannot read {value!r}: write one value, or task=value pairs separated by commas")
    return {k.strip(): v.strip() for k, v in pairs}


def parse_task_options(items: list[str]) -> dict[str, str | dict[str, str]]:
    """["timeout=30", "mbpp:timeout=3"] -> {"timeout": {"mbpp": "3"}}: a per-task value wins over a plain one
    for that task; the plain value goes to the others that take the option."""
    plain: dict[str, str] = {}
    per_task: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"cannot read --task-option {item!r}: write KEY=VALUE or TASK:KEY=VALUE")
        task, _, name = key.strip().rpartition(":")
        if task:
            per_task.setdefault(name, {})[task] = value.strip()
        else:
            plain[name] = value.strip()
    out: dict[str, str | dict[str, str]] = dict(plain)
    for name, values in per_task.items():
        if name in plain:
            fail(f"--task-option {name} is given both for every task and for {', '.join(values)}; give one form")
        out[name] = values
    return out


def format_results(results: dict) -> str:
    rows = [("task", "metric", "value", "stderr", "n", "verdicts")]
    for task, info in results["tasks"].items():
        verdicts = " ".join(f"{k}={v}" for k, v in info.get("verdicts", {}).items())
        for metric, value in info["metrics"].items():
            se = info.get("stderr", {}).get(metric)
            rows.append((task, metric, f"{value:.4f}", "" if se is None else f"±{se:.4f}", str(info["n"]), verdicts))
            verdicts = ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@app.command("serve")
def serve_command(
    model: Annotated[str, typer.Option(help=(
        "A model name (codestral-mamba, mistral-7b, mathstral, ...) or checkpoint folder; or `reference` / "
        "`replay:FILE.jsonl`, which answer the prompts of --tasks."), show_default=False)],
    tasks: Annotated[str, typer.Option(help=(
        "reference and replay: the tasks whose prompts (completion and chat form) they answer."))] = "",
    host: Annotated[str, typer.Option(help=(
        "Address to listen on. Anything but loopback exposes the model to the network."))] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")] = 8000,
    api_key: Annotated[str | None, typer.Option(envvar="EVALKIT_SERVE_API_KEY", help=(
        "Require `Authorization: Bearer KEY` on every request (401 otherwise)."))] = None,
    served_model_name: Annotated[str | None, typer.Option(help=(
        "The model id clients send and /v1/models lists (default: --model)."))] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help=(
        "Sequences the native model decodes together; concurrent requests share the batch."))] = None,
    dtype: Annotated[str | None, typer.Option(help="float32 or bfloat16 (native models).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (native models).")] = None,
    seed: Annotated[int, typer.Option(help=(
        "replay: the clients' run seed (evalkit run --seed), which maps a request's seed to its sample."))] = 1234,
    prompt: Annotated[str | None, typer.Option(help="reference and replay: the tasks' prompt variant(s).")] = None,
    task_option: Annotated[list[str] | None, typer.Option(help="reference and replay: task settings, as in run.")]
    = None,
    data_dir: Annotated[str | None, typer.Option(help="reference and replay: local benchmark mirror.")] = None,
) -> None:
    """Serve a model over an OpenAI-compatible API (/v1/completions, /v1/chat/completions, /v1/models,
    /tokenize), for `evalkit run --model openai:URL` or any other client. Needs the `serve` extra (fastapi, uvicorn)."""
    from evalkit.data import DataConfig

    try:
        from evalkit.serve import build_engine, is_loopback, serve
    except ImportError as e:
        fail(f"evalkit serve needs fastapi and uvicorn: pip install 'evalkit[serve]' ({e})")
    if not is_loopback(host) and not api_key:
        typer.secho(f"warning: listening on {host} without --api-key: anyone who can reach this port can use the "
                    "model (there is no authentication)", fg=typer.colors.YELLOW, err=True)
    try:
        engine = build_engine(
            model, comma_list(tasks), DataConfig.from_options(data_dir), parse_per_task(prompt),
            parse_task_options(task_option or []),
            {"dtype": dtype, "device": device, "batch_size": batch_size}, served_model_name, seed)

        def ready(url: str) -> None:
            typer.echo(f"serving {engine.name} at {url}  (evalkit run --model openai:{url} ...)")
            sys.stdout.flush()

        serve(engine, host, port, api_key, ready)
    except EvalkitError as e:
        fail(str(e))


@app.command("tasks")
def list_tasks() -> None:
    """List the available tasks, with their prompt variants (* marks the default), chat variant and options."""
    from evalkit.tasks import broken_task_modules, task_class, task_description, task_names

    for name in task_names():
        cls = task_class(name)
        typer.echo(f"{name:20s} {task_description(name)}")
        declared = []
        if cls.prompt_variants:
            variants = [v + ("*" if i == 0 else "") for i, v in enumerate(cls.prompt_variants)]
            declared.append(f"--prompt {'|'.join(variants)}")
        if cls.supports_chat:
            declared.append("--chat")
        declared += [f"--task-option {key}={spec.default} ({spec.help})" for key, spec in cls.options.items()]
        if declared:
            typer.echo(f"{'':20s}   {'; '.join(declared)}")
    for module, why in broken_task_modules().items():
        typer.secho(f"warning: task module tasks/{module}.py failed to import: {why}", fg=typer.colors.YELLOW, err=True)


LM_EVAL_HELP = (
    "Run lm-evaluation-harness (any of its tasks) on an evalkit model: lm-eval's own command line, with the "
    "model `evalkit` registered and chosen.\n\n"
    "Every option is lm-eval's (`lm-eval run --help` lists them) and passes through unchanged. --model_args takes "
    "`model=` any evalkit model spec (a name such as codestral-mamba, a checkpoint folder, hf:..., openai:...) and "
    "optionally `seed=` (the run seed each sample's seed derives from; 1234), `max_length=` (tokens per "
    "perplexity window; 2048), `max_gen_toks=` (the generation limit of tasks that set none; 256), `dtype=` and "
    "`requests_per_call=` (prompts per backend call; 64).\n\n"
    "Unless given (and without --config), --device and --batch_size are `auto`: the backend's own defaults (CUDA "
    "when present, else the CPU), not lm-eval's cuda:0 and 1. `evalkit lm-eval ls tasks` and `evalkit lm-eval "
    "validate ...` run those lm-eval subcommands.\n\n"
    "Example: `evalkit lm-eval --model_args model=codestral-mamba,dtype=bfloat16 --tasks hellaswag,arc_easy "
    "--limit 100 --output_path results/lm-eval --log_samples`\n\n"
    "Needs lm-eval: pip install 'evalkit\\[lm-eval]'."
)


@app.command("lm-eval", help=LM_EVAL_HELP, no_args_is_help=True,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def lm_eval_command(ctx: typer.Context) -> None:
    try:
        from evalkit.lm_eval import run_cli

        run_cli(ctx.args)
    except EvalkitError as e:
        fail(str(e))
    except ValueError as e:  # how lm-eval reports bad settings (an unknown task, a bad --limit, ...)
        fail(f"lm-eval: {e}")
    except SystemExit as e:  # lm-eval's argparse ends with exit codes of its own
        raise typer.Exit(e.code if isinstance(e.code, int) else 1) from None


@sandbox_app.command("build")
def sandbox_build(
    dockerfile: Annotated[bool, typer.Option(help="Build from sandbox/Dockerfile (needs a registry).")] = False,
    mirror: Annotated[str | None, typer.Option(help="Debian mirror for the offline build.")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if an image from this recipe exists.")] = False,
) -> None:
    """Build the sandbox image: offline from Debian packages (default) or from the Dockerfile."""
    from evalkit.sandbox import SandboxError
    from evalkit.sandbox.image import build_image, image_tag

    tag = image_tag()
    typer.echo(f"building {tag} ({'Dockerfile' if dockerfile else 'offline: debootstrap + chroot apt-get'})")
    try:
        build_image(tag, use_dockerfile=dockerfile, mirror=mirror, force=force)
    except SandboxError as e:
        fail(str(e))
    typer.echo(f"sandbox image ready: {tag}")


@sandbox_app.command("check")
def sandbox_check() -> None:
    """Report whether the engine, the image and each language toolchain work inside the sandbox."""
    from evalkit.sandbox import Program, SandboxError, open_sandbox
    from evalkit.sandbox.image import image_tag

    probes = {
        "python": ({"t.py": "print(6*7)"}, (("python3", "t.py"),)),
        "c++": ({"t.cpp": "#include <cstdio>\nint main(){std::printf(\"%d\\n\",6*7);}"},
                (("g++", "-std=c++17", "-o", "t", "t.cpp"), ("./t",))),
        "java": ({"Main.java": "public class Main{public static void main(String[] a){System.out.println(6*7);}}"},
                 (("javac", "Main.java"), ("java", "-ea", "Main"))),
        "javascript": ({"t.js": "console.log(6*7)"}, (("node", "t.js"),)),
        "bash": ({"t.sh": "echo $((6*7))"}, (("bash", "t.sh"),)),
        "sqlite3": ({}, (("sqlite3", ":memory:", "select 6*7;"),)),
        "go": ({"t.go": "package main\nimport \"fmt\"\nfunc main(){fmt.Println(6*7)}"}, (("go", "run", "t.go"),)),
        "rust": ({"t.rs": "fn main(){println!(\"{}\", 6*7);}"}, (("rustc", "-o", "t", "t.rs"), ("./t",))),
    }
    typer.echo(f"image: {image_tag()}")
    try:
        sandbox = open_sandbox(workers=1)
    except SandboxError as e:
        fail(str(e))
    broken = 0
    with sandbox:
        for lang, (files, commands) in probes.items():
            ex = sandbox.run(Program(files, commands, timeout=60, memory_mb=None))
            good = ex.ok and ex.stdout.strip() == "42"
            broken += not good
            why = (ex.detail + " " + ex.stderr)[-200:].strip()
            status = "ok" if good else f"MISSING or broken ({ex.status}: {why})"
            typer.echo(f"  {lang:11s} {status}")
        hostile = sandbox.run(Program({"t.py": "import socket; socket.create_connection(('1.1.1.1', 53), 3)"},
                                      (("python3", "t.py"),), timeout=10))
        isolated = not hostile.ok
        typer.echo(f"  {'network':11s} {'blocked' if isolated else 'REACHABLE: the sandbox is not isolated'}")
    if broken or not isolated:
        raise typer.Exit(1)


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run folders (each with results.json), one row each.",
                                                   show_default=False)],
    output_path: Annotated[Path | None, typer.Option("--output-path", "-o", help=(
        "Report file: .md (plots written beside it in NAME_files/) or .html (one self-contained page, plots "
        "embedded)."))] = None,
    bench: Annotated[Path | None, typer.Option(help="Folder written by `evalkit bench`: adds its throughput, "
                                                    "latency and memory curves.")] = None,
    out: Annotated[Path | None, typer.Option(hidden=True, help="Deprecated: --output-path.")] = None,
) -> None:
    """Leaderboard of runs: models as rows, task metrics (± stderr) as columns, differing settings flagged."""
    from evalkit.report import write_report

    if out is not None:
        _deprecated("--out", "--output-path")
        output_path = out
    if output_path is None:
        fail("--output-path is required: the report file, ending in .md or .html")
    try:
        path = write_report(run_dirs, output_path, bench)
    except (EvalkitError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    typer.echo(f"wrote {path}")


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="Run folder A (the reference side).", show_default=False)],
    b: Annotated[Path, typer.Argument(help="Run folder B; deltas are B - A.", show_default=False)],
    tasks: Annotated[str | None, typer.Option(help="Comma-separated tasks (default: all tasks in both).")] = None,
    max_listed: Annotated[int | None, typer.Option(help="List at most this many flipped samples per kind.")] = None,
) -> None:
    """Per-task metric deltas between two runs, and which problems (samples) flipped between pass and fail."""
    from evalkit.compare import compare_runs, format_comparison
    from evalkit.store import load_run

    try:
        comparison = compare_runs(load_run(a), load_run(b), comma_list(tasks) or None)
    except EvalkitError as e:
        fail(str(e))
    typer.echo(format_comparison(comparison, max_listed))


@app.command()
def gate(
    baseline: Annotated[Path, typer.Argument(help="Baseline run folder (e.g. under results/baselines/).",
                                             show_default=False)],
    candidate: Annotated[Path, typer.Argument(help="Candidate run folder.", show_default=False)],
    max_drop: Annotated[float, typer.Option(help="Tolerated drop in percentage points: a metric whose drop "
                                                 "(baseline - candidate, x100) is at most this never fails; a "
                                                 "larger drop fails only if the paired test is significant.")] = 1.0,
    confidence: Annotated[float, typer.Option(help="Confidence of the one-sided paired test: FAIL needs "
                                                   "p < 1 - confidence.")] = 0.95,
    tasks: Annotated[str | None, typer.Option(help="Comma-separated tasks to gate (default: all; then both runs "
                                                   "must have the same task set).")] = None,
) -> None:
    """CI regression gate: exit 0 if the candidate is not significantly worse than the baseline, 1 if it is,
    2 if the runs are not comparable (dataset, prompt, sampling, problems or task set differ).

    Tests: exact McNemar on flipped problems (1 sample each); paired bootstrap otherwise. See docs/ci-gate.md.
    """
    from evalkit.gate import IncomparableRuns, format_gate, gate_runs
    from evalkit.store import load_run

    try:
        result = gate_runs(load_run(baseline), load_run(candidate), max_drop, confidence, comma_list(tasks) or None)
    except IncomparableRuns as e:
        fail(f"cannot gate {candidate} against {baseline}: {e}")
    except (EvalkitError, ValueError) as e:
        fail(str(e))
    typer.echo(format_gate(result))
    raise typer.Exit(1 if result.failed else 0)


@app.command()
def bench(
    preset: Annotated[str, typer.Option(help="Model shapes and plan: `cpu` (default; minutes on 2 cores), "
                                             "`tiny` (seconds; for tests) or `7b` (Codestral Mamba 7B and "
                                             "Mistral 7B shapes; needs a GPU).")] = "cpu",
    config: Annotated[Path | None, typer.Option(help="JSON file of bench settings (mamba2, transformer, "
                                                     "contexts, dtype, repeats, warmup, decode_tokens); "
                                                     "\"preset\": NAME starts from a preset.")] = None,
    archs: Annotated[str, typer.Option(help="Comma-separated architectures: mamba2, swa (sliding window), "
                                            "full (the same transformer, window off).")] = "mamba2,swa,full",
    contexts: Annotated[str | None, typer.Option(help="Comma-separated context lengths (default: the "
                                                      "preset's, e.g. 512..16384 on a log2 scale).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's choice).")] = None,
    dtype: Annotated[str | None, typer.Option(help="float32, bfloat16 or float16 (default: the preset's).")] = None,
    repeats: Annotated[int | None, typer.Option(help="Timed rounds per point; the median is reported with its "
                                                     "min-max spread.")] = None,
    max_memory: Annotated[float | None, typer.Option(help="Memory budget in GiB (default: what is available); "
                                                          "a curve stops at the first size that would exceed "
                                                          "it.")] = None,
    output_path: Annotated[Path | None, typer.Option("--output-path", "-o", help=(
        "Folder for bench.json, bench.csv and the PNG plots (default: results/bench/PRESET-DEVICE)."))] = None,
    out_dir: Annotated[Path | None, typer.Option(hidden=True, help="Deprecated: --output-path.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Throughput against context length for Mamba-2, the sliding-window transformer and full attention:
    prefill tokens/s, decode ms/token (with the cache) and peak memory, random weights, batch 1.

    Writes bench.json, bench.csv (a row per architecture and context), prefill.png, decode.png and memory.png.

    `evalkit report --bench DIR` puts the curves into a report.
    """
    import dataclasses

    from evalkit.bench import BenchError, format_summary, load_config, run_bench, write_outputs

    if out_dir is not None:
        _deprecated("--out-dir", "--output-path")
        output_path = out_dir
    try:
        cfg = load_config(preset, config)
        overrides = {k: v for k, v in {"dtype": dtype, "repeats": repeats}.items() if v is not None}
        if contexts:
            overrides["contexts"] = tuple(int(c) for c in contexts.split(",") if c.strip())
        cfg = dataclasses.replace(cfg, **overrides)
        arch_list = [a.strip() for a in archs.split(",") if a.strip()]
        result = run_bench(cfg, device, threads, arch_list, max_memory, progress)
    except (BenchError, ValueError) as e:
        fail(str(e))
    target = output_path or Path("results/bench") / f"{preset if config is None else config.stem}-{device}"
    paths = write_outputs(result, target)
    typer.echo(format_summary(result))
    typer.echo(f"\nwrote {', '.join(str(p) for p in paths)}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
