"""AIME 2024: zero-shot boxed prompt, answers judged by math-verify ("025" == 25), n/30, pass@1 and maj@K."""

from __future__ import annotations

import pytest
from math_replay import reference_run, replay_run

from evalkit.answer_extraction import last_boxed
from evalkit.data import DataConfig
from evalkit.tasks import TaskError, get_task


@pytest.fixture(scope="module")
def aime(data_dir):
    task = get_task("aime24", DataConfig.from_options(str(data_dir)))
    return task, task.docs()


def test_docs_and_prompt(aime):
    task, docs = aime
    assert len(docs) == 30 and [d["task_id"] for d in docs[:2]] == ["60", "61"]
    assert docs[7]["answer"] == "025"
    req = task.request(docs[0])
    assert req.prompt.endswith("\nPlease reason step by step, and put your final answer within \\boxed{}.\n")
    assert req.prompt.startswith("Every morning Aya goes for a $9$-kilometer-long walk")
    assert last_boxed(req.reference) == "204"  # the copy's solutions box with \framebox, \textbf{(113) }, ...
    assert task.request(docs[1]).reference.endswith("The final answer is $\\boxed{113}$.")
    assert task.settings()["shots"] == 0 and "math-verify" in task.settings()["checker"]


def test_minerva_prompt_is_refused(data_dir):
    with pytest.raises(TaskError, match="aime24: unknown --prompt 'minerva'; aime24 takes one of boxed"):
        get_task("aime24", DataConfig.from_options(str(data_dir)), prompt="minerva")


@pytest.mark.parametrize(("answer", "right"), [
    ("$\\boxed{25}$", True), ("$\\boxed{025}$", True), ("$\\boxed{25.0}$", True), ("The final answer is 25.", True),
    ("$\\boxed{\\text{025}}$", False), ("$\\boxed{26}$", False), ("$\\boxed{\\frac{50}{2}}$", True),
    ("$\\boxed{25^\\circ}$", True), ("$\\boxed{m+n=25}$", True),  # math-verify's reading, text is not a number
    ("$\\boxed{25.5}$", False), ("$\\boxed{x}$", False), ("no idea", False),
])
def test_answer_comparison(aime, answer, right):
    task, docs = aime
    assert task.score(docs[7], answer).passed is right  # gold "025"


def test_reference_run_scores_30_of_30(tmp_path):
    info = reference_run(tmp_path, ["aime24"], samples=2)["tasks"]["aime24"]
    assert info["metrics"] == {"accuracy": 1.0, "maj@2": 1.0}
    assert info["solved"] == {"accuracy": "30/30", "maj@2": "30/30"}


def test_replayed_samples_give_n_of_30_pass1_and_majority(tmp_path, aime):
    _, docs = aime
    golds = [int(d["answer"]) for d in docs[:4]]  # 204, 113, 371, 385
    samples = [
        [f"\\boxed{{{golds[0]}}}", f"\\boxed{{{golds[0]:03d}}}", "\\boxed{7}"],  # 2/3, maj right
        ["\\boxed{1}", "\\boxed{001}", f"\\boxed{{{golds[1]}}}"],  # 1/3, "1" and "001" vote together: maj wrong
        ["\\boxed{5}", f"\\boxed{{{golds[2]}}}", "\\boxed{6}"],  # 1/3, three singletons: first wins, wrong
        [f"so it is {golds[3]}"] * 3,  # 3/3 through the last-number fallback
    ]
    lines = [{"task_id": d["task_id"], "completion": c} for d, cs in zip(docs, samples, strict=False) for c in cs]
    summary, records = replay_run(tmp_path, "aime24", lines)
    assert summary["metrics"]["accuracy"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3 + 1) / 4)
    assert summary["metrics"]["maj@3"] == pytest.approx(2 / 4)
    assert summary["solved"] == {"accuracy": "2.33333/4", "maj@3": "2/4"}
    assert records[0]["extra"]["gold"] == "204" and records[0]["answer"] == "204"


def test_hub_rows(monkeypatch):
    def fake_hub_rows(repo, split, config=None, revision=None):
        assert (repo, split) == ("Maxwell-Jia/AIME_2024", "train")
        return [{"ID": "2024-I-1", "Problem": "p", "Solution": "s", "Answer": 204}], {"source": "hub", "repo": repo}

    monkeypatch.setattr("evalkit.data.hub_rows", fake_hub_rows)
    docs = get_task("aime24", DataConfig(mirror=None)).docs()
    assert docs == [{"task_id": "2024-I-1", "problem": "p", "solution": "s", "answer": "204"}]
