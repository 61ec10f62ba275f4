"""The house rules that keep the code readable: one-way imports, declared task options, clear load errors."""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.data import DataConfig, load_rows
from evalkit.errors import EvalkitError, TaskError
from evalkit.tasks import build_tasks, get_task, task_class, task_names

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ imports


def import_graph(include_function_level: bool) -> dict[str, set[str]]:
    """module -> the package modules it imports (evalkit.* and tasks.*), read from the source with ast."""
    modules = {}
    for root in ("evalkit", "tasks"):
        for path in (REPO / root).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = ast.walk(tree) if include_function_level else tree.body
        edges = set()
        for node in nodes:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.parametrize("function_level", [False, True])
def test_the_import_graph_has_no_cycle(function_level):
    """Data flows one way. The registry finds adapters by importing the `tasks` package (whose __init__
    imports nothing), so even the imports inside functions form no cycle."""
    graph = import_graph(function_level)
    assert len(graph) > 40 and "evalkit.tasks" in graph["tasks.humaneval"]
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_do_not_import_upwards():
    graph = import_graph(include_function_level=True)
    sandbox = {m for m in graph if m.startswith("evalkit.sandbox")}
    for module in sandbox:  # the sandbox knows nothing of tasks, backends or runs
        assert graph[module] <= sandbox | {"evalkit.errors"}, module
    for module in ("evalkit.sanitize", "evalkit.requests", "evalkit.errors"):
        assert not any(t.startswith(("evalkit.backends", "evalkit.runner", "evalkit.tasks")) for t in graph[module])
    for module in (m for m in graph if m.startswith("tasks.")):  # adapters see requests, never backends
        assert not any(t.startswith(("evalkit.backends", "evalkit.runner")) for t in graph[module]), module


# ------------------------------------------------------------------------------------------ task options


def test_every_task_declares_its_options_and_validates_them():
    for name in task_names():
        cls = task_class(name)
        task = get_task(name)
        assert task.prompt_variant == (cls.prompt_variants[0] if cls.prompt_variants else None)
        assert set(task.chosen()) >= set(cls.options)
        with pytest.raises(TaskError, match="unknown --prompt 'bogus'"):
            get_task(name, prompt="bogus")
        with pytest.raises(TaskError, match="unknown task option"):
            get_task(name, no_such_option=1)


def test_option_values_are_parsed_as_declared():
    task = get_task("humaneval", timeout="2.5")
    assert task.option("timeout") == 2.5 and task.chosen()["timeout"] == 2.5
    with pytest.raises(TaskError, match="humaneval option timeout: 'soon' is not a float"):
        get_task("humaneval", timeout="soon")
    with pytest.raises(TaskError, match="must be positive"):
        get_task("humaneval", timeout=0)


def test_a_plain_option_goes_to_the_tasks_that_take_it():
    notes = []
    tasks = build_tasks(["math500", "gsm8k", "mbpp"], DataConfig(), prompt="boxed", note=notes.append)
    assert tasks["math500"].prompt_variant == "boxed" and tasks["mbpp"].prompt_variant == "3-shot"
    assert notes == ["--prompt boxed applies to math500; gsm8k, mbpp keep their default"]


def test_an_option_no_selected_task_takes_is_an_error_naming_who_takes_it():
    with pytest.raises(TaskError) as e:
        build_tasks(["gsm8k", "humaneval"], DataConfig(), prompt="boxed")
    assert "applies to none of the selected tasks" in str(e.value) and "math500 (minerva, boxed)" in str(e.value)
    with pytest.raises(TaskError, match="--task-option keep_going .*tasks that take --task-option keep_going: none"):
        build_tasks(["gsm8k"], DataConfig(), options={"keep_going": "1"})
    with pytest.raises(TaskError, match="not selected with --tasks: mbpp"):
        build_tasks(["gsm8k"], DataConfig(), prompt={"mbpp": "zero-shot"})
    with pytest.raises(TaskError, match="gsm8k: unknown --prompt 'boxed'; gsm8k takes no prompt variants"):
        build_tasks(["gsm8k"], DataConfig(), prompt={"gsm8k": "boxed"})


@pytest.mark.parametrize(("args", "message"), [
    (["--limit", "0"], "Invalid value for '--limit': Input should be greater than or equal to 1"),
    (["--temperature", "-0.5"], "Invalid value for '--temperature': Input should be greater than or equal to 0"),
    (["--top-p", "0"], "0.0 is not in (0, 1]"),
    (["--top-p", "1.5"], "1.5 is not in (0, 1]"),
    (["--n-samples", "0"], "Invalid value for '--n-samples': Input should be greater than or equal to 1"),
    (["--batch-size", "-1"], "Invalid value for '--batch-size': Input should be greater than or equal to 1"),
    (["--max-tokens", "0"], "Invalid value for '--max-tokens': Input should be greater than or equal to 1"),
    (["--sandbox-workers", "0"], "Invalid value for '--sandbox-workers': Input should be greater than or equal to 1"),
    (["--requests-per-call", "0"], "Invalid value for '--requests-per-call': Input should be greater than or equal"),
    (["--prompt", "bogus"], "--prompt 'bogus' applies to none of the selected tasks"),
    (["--task-option", "nonsense"], "cannot read --task-option 'nonsense'"),
    (["--dtype", "float32"], "--dtype does not apply to --model 'reference'"),
])
def test_numeric_and_option_errors_are_one_clear_line(args, message, tmp_path):
    res = CliRunner().invoke(app, ["run", "--model", "reference", "--tasks", "humaneval", "--limit", "1",
                                   "-o", str(tmp_path), "--no-progress", *args])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.replace("│", " ").split()), res.output
    assert "Traceback" not in res.output
    assert not list(tmp_path.iterdir())  # nothing was started


def test_deprecated_spellings_still_work_with_a_note(tmp_path):
    res = CliRunner().invoke(app, ["run", "--model", "reference", "--tasks", "humaneval", "--limit", "1",
                                   "--samples", "2", "--output-dir", str(tmp_path), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "--samples is deprecated; use --n-samples" in res.output
    assert "--output-dir is deprecated; use --output-path" in res.output
    [run] = list(tmp_path.iterdir())
    assert json.loads((run / "results.json").read_text())["tasks"]["humaneval"]["samples_per_problem"] == 2


# ------------------------------------------------------------------------------------------ load errors


def write_jsonl(path: Path, rows: list, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


ROW = {"task_id": "HumanEval/0", "prompt": "def f():\n", "entry_point": "f", "canonical_solution": "  pass\n",
       "test": "def check(c): pass\n"}


@pytest.mark.parametrize(("rows", "message"), [
    ([{**ROW, "prompt": None}], r"humaneval/HumanEval.jsonl.gz:1: field 'prompt' should be str, got NoneType"),
    ([{**ROW, "task_id": 7}], r"HumanEval.jsonl.gz:1: field 'task_id' should be str, got int 7"),
    ([ROW, ROW], r"HumanEval.jsonl.gz:2: task_id 'HumanEval/0' repeats .*HumanEval.jsonl.gz:1"),
    ([], r"humaneval: the dataset is empty"),
    ([{k: v for k, v in ROW.items() if k != "test"}], r"HumanEval.jsonl.gz:1: malformed row, missing field\(s\) test"),
    (["[1, 2]"], r"HumanEval.jsonl.gz:1: expected a JSON object, got list"),
    (["{not json"], r"HumanEval.jsonl.gz:1: not valid JSON"),
])
def test_malformed_data_is_a_load_error_naming_file_and_row(tmp_path, rows, message):
    write_jsonl(tmp_path / "humaneval" / "HumanEval.jsonl.gz", rows, gz=True)
    task = get_task("humaneval", DataConfig(mirror=tmp_path))
    with pytest.raises(TaskError, match=message):
        task.docs()


def test_a_damaged_gzip_file_is_one_clear_error(tmp_path):
    path = write_jsonl(tmp_path / "humaneval" / "HumanEval.jsonl.gz", [ROW] * 50, gz=True)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TaskError, match="not a complete gzip file"):
        get_task("humaneval", DataConfig(mirror=tmp_path)).docs()
    path.write_bytes(b"plain text, not gzip\n")
    with pytest.raises(TaskError, match="not a complete gzip file"):
        get_task("humaneval", DataConfig(mirror=tmp_path)).docs()


def test_load_rows_reads_json_lists_and_checks_types(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "rows.json").write_text(json.dumps([{"id": 1, "q": "a"}, {"id": 2, "q": "b"}]))
    rows, provenance = load_rows(DataConfig(mirror=tmp_path), "x", local="x/rows.json", fields={"id": int, "q": str},
                                 unique="id")
    assert [r["id"] for r in rows] == [1, 2] and list(provenance["files"]) == ["x/rows.json"]
    (tmp_path / "x" / "rows.json").write_text(json.dumps([{"id": True, "q": "a"}]))
    with pytest.raises(TaskError, match=r"x/rows.json row 0: field 'id' should be int, got bool"):
        load_rows(DataConfig(mirror=tmp_path), "x", local="x/rows.json", fields={"id": int})


def test_every_known_error_is_an_evalkit_error():
    from evalkit.backends import BackendError
    from evalkit.bench import BenchError
    from evalkit.gate import IncomparableRuns
    from evalkit.models.checkpoint import CheckpointError
    from evalkit.sandbox import SandboxError
    from evalkit.store import RunStoreError

    for error in (BackendError, BenchError, CheckpointError, IncomparableRuns, RunStoreError, SandboxError, TaskError):
        assert issubclass(error, EvalkitError), error


def test_every_task_aggregates_samples_the_harness_could_not_judge():
    """A sample that ended in `error` (a server that kept failing) has no task-specific extra; every task's
    metrics must still come out, with the error counted as not passed."""
    from evalkit.requests import SamplingParams

    for name in task_names():
        task = get_task(name)
        ids = {"mmlu": "mmlu/anatomy/0", "gsm8k": "gsm8k/0"}.get(name, f"{name}/0")
        error = {"task": name, "task_id": ids, "sample_index": 0, "verdict": "error", "passed": False,
                 "answer": None, "extra": {}, "error": "the backend could not produce this sample"}
        metrics = task.aggregate([error], SamplingParams())["metrics"]
        assert metrics and all(value == 0 for value in metrics.values()), (name, metrics)
