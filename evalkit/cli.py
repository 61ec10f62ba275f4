"""The `evalkit` command line."""

from __future__ import annotations

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


def _probability(value: float) -> float:
    if not 0.0 < value <= 1.0:
        raise typer.BadParameter(f"{value} is not in (0, 1]")
    return value


def _deprecated(old: str, new: str) -> None:
    typer.secho(f"note: {old} is deprecated; use {new}", fg=typer.colors.YELLOW, err=True)


@app.command()
def run(
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
    dtype: Annotated[str | None, typer.Option(rich_help_panel=MODEL,
                                              help="float32 or bfloat16 (native models).")] = None,
    device: Annotated[str | None, typer.Option(rich_help_panel=MODEL, help="cpu or cuda (native models).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, rich_help_panel=TASKS,
                                              help="Evaluate only the first N problems of each task.")] = None,
    prompt: Annotated[str | None, typer.Option(rich_help_panel=TASKS, help=(
        "Prompt variant for the tasks that have several (`evalkit tasks` lists them, e.g. `boxed` for math, "
        "`zero-shot` for mbpp), or per task: `math=minerva,mbpp=zero-shot`."))] = None,
    chat: Annotated[bool, typer.Option(rich_help_panel=TASKS, help=(
        "Prompt as an instruct model: render each task's chat variant with the model's chat format."))] = False,
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
        "Continue the run in this folder with its recorded settings: finished samples are neither "
        "regenerated nor re-executed; samples that ended in `error` are done again."))] = None,
    progress: Annotated[bool, typer.Option(rich_help_panel=OUTPUT, help="Show progress bars.")] = True,
) -> None:
    """Evaluate a model on tasks and write a run folder (results.json, samples.jsonl)."""
    from evalkit.data import DataConfig
    from evalkit.requests import SamplingParams
    from evalkit.runner import RunInterrupted, RunOptions, run_evaluation

    if samples is not None:
        _deprecated("--samples", "--n-samples")
        n_samples = samples
    if output_dir is not None:
        _deprecated("--output-dir", "--output-path")
        output_path = output_dir
    task_list = comma_list(tasks)
    if not model or not task_list:
        fail("--model and --tasks are required (`evalkit tasks` lists the tasks)")
    try:
        opts = RunOptions(
            model=model, tasks=task_list, limit=limit, output_dir=output_path, resume=resume,
            sampling=SamplingParams(n=n_samples, temperature=temperature, top_p=top_p, seed=seed),
            data=DataConfig.from_options(data_dir, hub=hub, revision=dataset_revision, spider_db_dir=spider_db_dir),
            requests_per_call=requests_per_call, max_tokens=max_tokens, unsafe_local=unsafe_local_execution,
            sandbox_workers=sandbox_workers, prompt=parse_per_task(prompt), chat=chat,
            task_options=parse_task_options(task_option or []),
            backend_options={"dtype": dtype, "device": device, "batch_size": batch_size},
        )
        path, results = run_evaluation(opts, progress=progress, log=lambda m: typer.echo(m, err=True))
    except RunInterrupted as e:
        typer.secho(f"\ninterrupted ({type(e.cause).__name__}: {e.cause}). Finished samples are saved in {e.path}; "
                    f"continue with the same command plus --resume {e.path}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130 if isinstance(e.cause, KeyboardInterrupt) else 1) from None
    except EvalkitError as e:
        fail(str(e))
    typer.echo(format_results(results))
    typer.echo(f"\nwrote {path / 'results.json'} and {path / 'samples.jsonl'}")


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
