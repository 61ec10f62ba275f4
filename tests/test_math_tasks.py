"""MATH (5000) and MATH-500: data, prompts, the reference self-check, replayed scores, timeouts, hub rows."""

from __future__ import annotations

import time

import pytest
from math_replay import reference_run, replay_run

import evalkit.math_equivalence as math_equivalence
import tasks.math as math_tasks
from evalkit.data import DataConfig
from evalkit.math_equivalence import SymbolicChecker
from evalkit.requests import SamplingParams
from evalkit.tasks import TaskError, get_task


@pytest.fixture(scope="module")
def math_docs(data_dir):
    task = get_task("math", DataConfig.from_options(str(data_dir)))
    return task, task.docs()


@pytest.fixture(scope="module")
def math500_docs(data_dir):
    task = get_task("math500", DataConfig.from_options(str(data_dir)))
    return task, task.docs()


def test_docs_ids_and_gold_answers(math_docs, math500_docs):
    task, docs = math_docs
    assert len(docs) == 5000 and docs[0]["task_id"] == "math/0" and docs[4999]["task_id"] == "math/4999"
    assert docs[0]["answer"] == "2" and docs[2]["answer"] == "\\dfrac{9}{7}"  # last \boxed{} of the solution
    assert list(task.provenance["files"].values()) == [
        "3371949f33dd702d04b43fddd7d53a028de0aaca0e76abb1b875a050297b3aa4"]
    task500, docs500 = math500_docs
    assert len(docs500) == 500 and len({d["task_id"] for d in docs500}) == 500
    assert docs500[0]["task_id"] == "test/precalculus/807.json"
    assert docs500[0]["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"


def test_default_prompt_is_minerva_four_shot(math500_docs):
    task, docs = math500_docs
    req = task.request(docs[0])
    assert req.prompt.count("Problem:\n") == 5 and req.prompt.count("I hope it is correct.") == 4
    assert req.prompt.startswith("Problem:\nFind the domain of the expression")
    assert req.prompt.endswith(f"Problem:\n{docs[0]['problem']}\n\nSolution:")
    assert req.stop == ("Problem:",)
    assert req.reference.endswith("Final Answer: The final answer is $\\left( 3, \\frac{\\pi}{2} \\right)$. "
                                  "I hope it is correct.")
    settings = task.settings()
    assert settings["shots"] == 4 and "Minerva" in settings["prompt_source"]


def test_boxed_prompt_variant(math500_docs, data_dir):
    _, docs = math500_docs
    task = get_task("math500", DataConfig.from_options(str(data_dir)), prompt="boxed")
    req = task.request(docs[0])
    assert req.prompt == (f"{docs[0]['problem']}\n"
                          "Please reason step by step, and put your final answer within \\boxed{}.\n")
    assert req.stop == () and task.settings()["shots"] == 0
    with pytest.raises(TaskError, match="unknown --prompt 'fancy'; math500 takes one of minerva, boxed"):
        get_task("math500", DataConfig.from_options(str(data_dir)), prompt="fancy")


@pytest.mark.parametrize("variant", ["minerva", "boxed"])
def test_full_reference_self_check_takes_the_string_fast_path(math_docs, math500_docs, data_dir, variant):
    """All 5500 reference solutions score as correct, through the string fast path (no sympy). How fast that is
    is measured by benchmarks, not here."""
    for name, (_, docs) in (("math", math_docs), ("math500", math500_docs)):
        task = get_task(name, DataConfig.from_options(str(data_dir)), prompt=variant)
        scored = [task.score(d, task.request(d).reference) for d in docs]
        assert [s.verdict for s in scored].count("passed") == len(docs)
        assert {s.extra["check"] for s in scored} == {"string"}


def test_reference_run_scores_one_on_every_math_and_knowledge_task(tmp_path):
    results = reference_run(tmp_path, ["math", "math500", "gsm8k", "mmlu", "aime24"], limit=40)
    metrics = {name: info["metrics"] for name, info in results["tasks"].items()}
    assert metrics == {
        "math": {"accuracy": 1.0},
        "math500": {"accuracy": 1.0},
        "gsm8k": {"strict_match": 1.0, "flexible_extract": 1.0, "numeric_match": 1.0},
        "mmlu": {"acc": 1.0, "acc_macro": 1.0},
        "aime24": {"accuracy": 1.0},
    }
    assert all(info["stderr_method"] for info in results["tasks"].values())


# The first ten MATH-500 problems, answered in other spellings, wrongly, or not at all.
MATH500_REPLAY = [
    ("test/precalculus/807.json", "The point is $\\boxed{(3, \\pi/2)}$.", True),
    ("test/intermediate_algebra/1994.json", "Final Answer: The final answer is $-q+p$. I hope it is correct.", True),
    ("test/algebra/2584.json", "So x is about 4.6667", False),
    ("test/number_theory/572.json", "$\\boxed{9}$", True),
    ("test/algebra/1349.json", "Final Answer: The final answer is $\\text{Evelyn}$. I hope it is correct.", True),
    ("test/prealgebra/1622.json", "$\\boxed{24}$", False),
    ("test/number_theory/515.json", "I am not sure.", False),
    ("test/precalculus/927.json", "The angle is $\\boxed{90}$ degrees.", True),
    ("test/algebra/2036.json", "The distance is $\\boxed{\\sqrt{117}}$.", True),
    ("test/prealgebra/1139.json", "$\\boxed{5}$", False),
]


def test_replayed_math500_gives_exact_scores(tmp_path):
    lines = [{"task_id": tid, "completion": text} for tid, text, _ in MATH500_REPLAY]
    summary, records = replay_run(tmp_path, "math500", lines)
    verdicts = {r["task_id"]: r["verdict"] == "passed" for r in records}
    assert verdicts == {tid: right for tid, _, right in MATH500_REPLAY}
    assert summary["metrics"] == {"accuracy": pytest.approx(0.6)}
    assert summary["stderr"]["accuracy"] == pytest.approx((0.24 / 9) ** 0.5)  # sqrt(p(1-p) n/(n-1) / n)
    by_id = {r["task_id"]: r for r in records}
    first = by_id["test/precalculus/807.json"]
    assert first["answer"] == "(3, \\pi/2)" and first["extra"]["gold"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first["completion"] == MATH500_REPLAY[0][1]
    assert by_id["test/number_theory/515.json"]["answer"] is None


def test_replayed_samples_give_mean_accuracy_and_majority_over_equivalent_answers(tmp_path):
    samples = {  # the first six MATH problems; golds 2, 10, 9/7, i, 4, 402
        "math/0": ["\\boxed{3}", "\\boxed{2}", "\\boxed{2.0}"],  # raw strings tie; the class {2, 2.0} wins
        "math/1": ["\\boxed{12}", "\\boxed{12}", "\\boxed{10}"],
        "math/2": ["\\boxed{9/7}", "\\boxed{\\frac{18}{14}}", "\\boxed{1.3}"],
        "math/3": ["\\boxed{-i}", "\\boxed{i}", "\\boxed{1}"],  # three singletons: the first one wins
        "math/4": ["so x = 4", "\\boxed{x=4}", "\\boxed{5}"],
        "math/5": ["The total is 402", "\\boxed{402}", "\\boxed{4 0 2}"],  # 4 0 2 is no number for math-verify
    }
    lines = [{"task_id": tid, "completion": c} for tid, cs in samples.items() for c in cs]
    summary, records = replay_run(tmp_path, "math", lines)
    assert summary["samples_per_problem"] == 3
    assert summary["metrics"]["accuracy"] == pytest.approx((2 + 1 + 2 + 1 + 2 + 2) / 18)
    assert summary["metrics"]["maj@3"] == pytest.approx(4 / 6)
    assert set(summary["stderr"]) == {"accuracy", "maj@3"} == set(summary["stderr_method"])


def test_a_pathological_answer_gets_a_timeout_verdict(math500_docs, monkeypatch):
    task, docs = math500_docs
    checker = SymbolicChecker(timeout_s=1.0)
    monkeypatch.setattr(math_equivalence, "_default_checker", checker)
    try:
        start = time.monotonic()
        scored = task.score(docs[3], "$\\boxed{9^{9^{9}}}$")
        assert scored.verdict == "timeout" and scored.answer == "9^{9^{9}}" and "timed out" in scored.error
        assert time.monotonic() - start < 30
        assert task.score(docs[3], "$\\boxed{3^2}$").verdict == "passed"  # the next check works again
        summary = task.aggregate([{"task_id": "a", "sample_index": 0, "verdict": "timeout", "answer": "x"}],
                                 SamplingParams())
        assert summary["metrics"]["accuracy"] == 0.0
    finally:
        checker.close()


def test_hub_rows_are_read_like_the_mirror(monkeypatch):
    calls = []

    def fake_hub_rows(repo, split, config=None, revision=None):
        calls.append((repo, split, config))
        if repo == "HuggingFaceH4/MATH-500":
            rows = [{"problem": "1+1?", "solution": "$\\boxed{2}$", "answer": "2", "subject": "Algebra", "level": 1,
                     "unique_id": "test/algebra/1.json"}]
        else:
            rows = [{"problem": f"{config}?", "solution": "so $\\boxed{7}$", "level": "Level 1", "type": config}]
        return rows, {"source": "hub", "repo": repo}

    monkeypatch.setattr("evalkit.data.hub_rows", fake_hub_rows)
    hub = DataConfig(mirror=None)
    docs = get_task("math", hub).docs()
    assert [d["task_id"] for d in docs] == [f"math/{i}" for i in range(7)] and docs[0]["answer"] == "7"
    assert {c for _, _, c in calls} == set(math_tasks.HUB_SUBJECTS)
    docs500 = get_task("math500", hub).docs()
    assert docs500[0]["task_id"] == "test/algebra/1.json" and docs500[0]["answer"] == "2"
