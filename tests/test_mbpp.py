"""MBPP and MBPP-sanitized: the 3-shot and zero-shot prompts, program assembly, and the reference
self-check over every test problem in the sandbox."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from evalkit.data import DataConfig
from evalkit.tasks import TaskError, get_task
from tasks.mbpp import KNOWN_BROKEN

EXEMPLAR_2 = (
    "You are an expert Python programmer, and here is your task: Write a function to find the similar elements "
    "from the given two tuple lists. Your code should pass these tests:\n\n"
    "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)\n"
    "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)\n"
    "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)\n"
    "[BEGIN]\ndef similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n"
    "  return (res) \n[DONE]\n\n"
)


def load(name: str, data_dir, variant: str | None = None):
    task = get_task(name, DataConfig(mirror=data_dir), prompt=variant)
    return task, {d["task_id"]: d for d in task.docs()}


@pytest.fixture(scope="module")
def mbpp(data_dir):
    return load("mbpp", data_dir)


@pytest.fixture(scope="module")
def sanitized(data_dir):
    return load("mbpp-sanitized", data_dir)


def test_test_split_is_task_ids_11_to_510(mbpp, sanitized):
    assert sorted(map(int, mbpp[1])) == list(range(11, 511))
    assert len(sanitized[1]) == 257 and all(11 <= int(t) <= 510 for t in sanitized[1])


def test_three_shot_prompt(mbpp):
    task, docs = mbpp
    prompt = task.request(docs["11"]).prompt
    assert prompt.startswith(EXEMPLAR_2)
    assert prompt.count("[BEGIN]") == 4 and prompt.count("[DONE]") == 3
    assert "Write a python function to identify non-prime numbers." in prompt
    assert prompt.endswith("\n".join(docs["11"]["test_list"]) + "\n[BEGIN]\n")
    assert task.request(docs["11"]).stop == ("[DONE]",)


def test_sanitized_prompt_shows_every_test(sanitized):
    task, docs = sanitized
    doc = next(d for d in docs.values() if len(d["test_list"]) > 3)
    prompt = task.request(doc).prompt
    assert all(t in prompt for t in doc["test_list"])
    assert "Write a function to find the shared elements from the given two lists." in prompt  # its own exemplar


def test_zero_shot_variant_and_unknown_variant(data_dir):
    task, docs = load("mbpp", data_dir, "zero-shot")
    prompt = task.request(docs["11"]).prompt
    assert prompt.startswith("You are an expert Python programmer, and here is your task: " + docs["11"]["text"])
    assert prompt.count("[BEGIN]") == 1 and task.settings()["exemplar_ids"] == []
    with pytest.raises(TaskError, match="unknown --prompt"):
        load("mbpp", data_dir, "five-shot")


def test_program_puts_setup_after_the_code_and_imports_before(mbpp, sanitized):
    task, docs = mbpp
    source = task.program(docs["367"], "class Node:\n    pass\n[DONE] trailing chatter")
    spec = json.loads(source.files["tests.json"])
    assert spec["module"] == "class Node:\n    pass\n" and "chatter" not in source.shown
    assert spec["setup"].startswith("root = Node(1)") and spec["statements"] == docs["367"]["test_list"]
    assert source.shown.index("class Node") < source.shown.index("root = Node(1)") < source.shown.index("assert ")
    task, docs = sanitized
    doc = next(d for d in docs.values() if d["test_imports"])
    spec = json.loads(task.program(doc, "def f():\n    return 1\n").files["tests.json"])
    assert spec["module"].startswith(doc["test_imports"][0] + "\n") and not spec["setup"]


def test_markdown_fenced_answer_is_unwrapped(mbpp):
    task, docs = mbpp
    source = task.program(docs["11"], "```python\ndef f():\n    return 1\n```\nExplanation: ...")
    assert source.files["main.py"] == "def f():\n    return 1\n" and "```" not in source.shown


@pytest.fixture(scope="module")
def self_check(sandbox, mbpp, sanitized):
    jobs = [(task, doc) for task, docs in (mbpp, sanitized) for doc in docs.values()]
    with ThreadPoolExecutor(max_workers=sandbox.size) as pool:
        scored = list(pool.map(lambda j: j[0].score(j[1], j[0].request(j[1]).reference, sandbox), jobs))
    return {(task.name, doc["task_id"]): s for (task, doc), s in zip(jobs, scored, strict=True)}


@pytest.mark.docker
@pytest.mark.parametrize("name", ["mbpp", "mbpp-sanitized"])
def test_reference_solutions_pass(self_check, name):
    results = {tid: s for (n, tid), s in self_check.items() if n == name}
    unexpected = {tid: s.error[-300:] for tid, s in results.items() if s.passed == (tid in KNOWN_BROKEN[name])}
    assert not unexpected
    assert len(results) == (500 if name == "mbpp" else 257)


@pytest.mark.docker
def test_wrong_answers_and_early_exits_fail(sandbox, data_dir):
    task = get_task("mbpp", DataConfig(mirror=data_dir), timeout=3.0)
    doc = {d["task_id"]: d for d in task.docs()}["11"]
    wrong = doc["code"].replace("return", "return None and", 1)
    assert task.score(doc, wrong, sandbox).verdict == "failed"
    early_exit = "import os\nos._exit(0)\n" + doc["code"]
    scored = task.score(doc, early_exit, sandbox)
    assert scored.verdict == "failed" and "before the end of its tests" in scored.error
    assert task.score(doc, "while True:\n    pass\n", sandbox).verdict == "timeout"


@pytest.mark.docker
def test_a_demo_block_under_main_does_not_run(sandbox, mbpp):
    """code_eval executes the code into a fresh namespace, where `__name__ == "__main__"` is false."""
    task, docs = mbpp
    doc = docs["11"]
    demo = doc["code"] + "\nif __name__ == '__main__':\n    print(input())\n    assert False\n"
    assert task.score(doc, demo, sandbox).passed


def test_loads_from_the_hub_without_a_mirror(monkeypatch, data_dir):
    rows = {r["task_id"]: r for r in map(json.loads, (data_dir / "mbpp" / "mbpp.jsonl").open())}
    calls = []

    def fake_hub_rows(repo, split, config=None, revision=None):
        calls.append((repo, split, config))
        ids = (2, 3, 4) if split == "prompt" else (11, 12)
        return [rows[i] for i in ids], {"source": "hub", "repo": repo}

    monkeypatch.setattr("evalkit.data.hub_rows", fake_hub_rows)
    task = get_task("mbpp", DataConfig())
    assert [d["task_id"] for d in task.docs()] == ["11", "12"]
    assert sorted(calls) == [("google-research-datasets/mbpp", "prompt", "full"),
                             ("google-research-datasets/mbpp", "test", "full")]
    assert task.request(task.docs()[0]).prompt.startswith(EXEMPLAR_2) and task.provenance["source"] == "hub"
