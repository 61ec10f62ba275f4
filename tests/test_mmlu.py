"""MMLU: 5-shot prompts and verdicts checked against lm-eval's own `mmlu` tasks; micro/macro/per-subject."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from math_replay import replay_run

import tasks.mmlu as mmlu_task
from evalkit.data import DataConfig
from evalkit.requests import SamplingParams
from evalkit.tasks import get_task

# The first subject, one with literal "None" answer options, one whose questions carry stray whitespace.
COMPARED_SUBJECTS = ("abstract_algebra", "college_mathematics", "formal_logic")


@pytest.fixture(scope="module")
def mmlu(data_dir):
    task = get_task("mmlu", DataConfig.from_options(str(data_dir)))
    return task, task.docs()


def lm_eval_mmlu_yaml(subject: str) -> dict:
    import lm_eval

    folder = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    config = yaml.safe_load((folder / "_default_template_yaml").read_text())
    subject_config = yaml.safe_load((folder / f"mmlu_{subject}.yaml").read_text())
    subject_config.pop("include")
    return config | subject_config


@pytest.fixture(scope="module")
def lm_eval_mmlu(mmlu, tmp_path_factory):
    """lm-eval's mmlu_<subject> tasks from their YAML, reading our docs written in cais/mmlu's schema."""
    from lm_eval.api.task import ConfigurableTask

    _, docs = mmlu
    tmp = tmp_path_factory.mktemp("lm_eval_mmlu")
    built = {}
    for subject in COMPARED_SUBJECTS:
        ours = [d for d in docs if d["subject"] == subject]
        files = {}
        for split, rows in (("test", ours), ("dev", ours[0]["shots"])):
            files[split] = str(tmp / f"{subject}_{split}.jsonl")
            Path(files[split]).write_text("".join(
                json.dumps({"question": r["question"], "subject": subject, "choices": r["choices"],
                            "answer": r["answer"]}) + "\n" for r in rows), encoding="utf-8")
        config = lm_eval_mmlu_yaml(subject)
        config.update(dataset_path="json", dataset_name=None,
                      dataset_kwargs={"data_files": files, "cache_dir": str(tmp / "cache")})
        built[subject] = (ConfigurableTask(config=config), ours)
    return built


def test_docs_default_to_five_shots(mmlu):
    task, docs = mmlu
    assert len(docs) == 14042 and len({d["subject"] for d in docs}) == 57
    assert docs[0]["task_id"] == "mmlu/abstract_algebra/0" and len({d["task_id"] for d in docs}) == 14042
    assert task.shots == 5 and task.settings()["shots"] == 5
    prompt = task.request(docs[0]).context
    assert prompt.startswith("The following are multiple choice questions (with answers) about abstract algebra.\n\n")
    assert prompt.count("\nAnswer:") == 6  # five solved dev questions, then the test question
    assert task.request(docs[0]).continuations == (" A", " B", " C", " D")
    assert sum(d["choices"].count("None") for d in docs) == 10  # literal "None" options survive reading


def test_prompts_equal_lm_eval_five_shot(mmlu, lm_eval_mmlu):
    task, _ = mmlu
    for subject, (lm_task, ours) in lm_eval_mmlu.items():
        for doc, lm_doc in zip(ours[:3] + ours[-1:], lm_task.test_docs().select([0, 1, 2, len(ours) - 1]),
                               strict=True):
            ctx = lm_task.fewshot_context(lm_doc, num_fewshot=5)
            assert task.request(doc).context == ctx, subject
            continuations = tuple(lm_task.config.target_delimiter + c for c in lm_task.doc_to_choice(lm_doc))
            assert continuations == mmlu_task.CONTINUATIONS


def test_descriptions_equal_lm_eval_for_every_subject(mmlu):
    task, docs = mmlu
    first_of_subject = {d["subject"]: d for d in reversed(docs)}
    for subject, doc in first_of_subject.items():
        assert task.request(doc).context.startswith(lm_eval_mmlu_yaml(subject)["description"]), subject


INF = float("inf")

# Held-out-style log-likelihood rows (gold is A): clear wins, ties, -inf where a backend cannot produce a choice,
# all -inf, positive values from a broken normaliser, and NaN or +inf, which are a backend failure.
LOGLIKELIHOOD_CASES = {
    "gold_best": [-0.5, -2.0, -3.0, -4.0],
    "other_best": [-2.0, -0.5, -3.0, -4.0],
    "tie_first": [-1.0, -1.0, -3.0, -4.0],
    "tie_later": [-3.0, -1.0, -1.0, -4.0],
    "all_equal": [-1.0, -1.0, -1.0, -1.0],
    "gold_neg_inf": [-INF, -1.0, -2.0, -3.0],
    "other_neg_inf": [-1.0, -INF, -INF, -2.0],
    "only_gold_finite": [-9.0, -INF, -INF, -INF],
    "only_other_finite": [-INF, -INF, -INF, -9.0],
    "all_neg_inf": [-INF, -INF, -INF, -INF],
    "tiny_differences": [-1.0000001, -1.0, -1.0000002, -5.0],
    "large_magnitudes": [-1e300, -1e301, -1e302, -1e303],
    "positive_values": [0.5, 0.2, -0.1, 0.0],
    "zeros": [0.0, 0.0, 0.0, 0.0],
    "nan": [float("nan"), -1.0, -2.0, -3.0],
    "nan_not_first": [-1.0, float("nan"), -2.0, -3.0],
    "pos_inf": [-1.0, INF, -2.0, -3.0],
}

# Where evalkit deliberately differs from lm-eval's argmax, and why.
DELIBERATE = {
    "nan": "NaN is no log-probability: evalkit records a backend failure (verdict error, redone by --resume); "
           "numpy's argmax picks the first NaN",
    "nan_not_first": "the same",
    "pos_inf": "+inf is no log-probability either; lm-eval would pick it",
}


def test_verdicts_agree_with_lm_eval_on_replayed_loglikelihoods(mmlu, lm_eval_mmlu):
    task, _ = mmlu
    rng = random.Random(7)
    compared = 0
    for lm_task, ours in lm_eval_mmlu.values():
        for doc, lm_doc in zip(ours, lm_task.test_docs(), strict=True):
            # Coarse values so that ties (resolved to the first maximum by both) occur; some -inf.
            lls = [rng.choice([float(rng.randint(-4, 0)), -INF]) for _ in range(4)]
            with np.errstate(invalid="ignore"):  # lm-eval's softmax of an all -inf row
                theirs = lm_task.process_results(lm_doc, [(ll, False) for ll in lls])["acc"]
            assert task.score(doc, lls).passed == bool(theirs), (doc["task_id"], lls)
            compared += 1
    assert compared == 100 + 100 + 126


def test_held_out_rows_equal_lm_evals_argmax_except_the_listed_cases(mmlu, lm_eval_mmlu):
    task, _ = mmlu
    lm_task, ours = lm_eval_mmlu["abstract_algebra"]
    doc, lm_doc = ours[0], lm_task.test_docs()[0]
    differ = {}
    for gold in range(4):  # each row with the gold at every position
        doc, lm_doc = dict(doc, answer=gold), dict(lm_doc, answer=gold)
        for case, lls in LOGLIKELIHOOD_CASES.items():
            scored = task.score(doc, lls)
            with np.errstate(invalid="ignore"):
                theirs = bool(lm_task.process_results(lm_doc, [(ll, False) for ll in lls])["acc"])
            assert theirs == (int(np.argmax(lls)) == gold)  # lm-eval's acc is argmax == gold
            if scored.verdict == "error" or scored.passed != theirs:
                differ[case] = scored.verdict
    assert differ == dict.fromkeys(DELIBERATE, "error")
    assert task.score(doc, [-INF] * 4).answer == "A"  # all -inf: the first choice, as argmax


def test_replayed_neg_inf_rows_are_scored_and_nan_rows_are_errors(tmp_path, mmlu):
    _, docs = mmlu
    nan = float("nan")
    rows = [[-1.0, -2.0, -INF, -INF], [-INF] * 4, [nan, -1.0, -1.0, -1.0], [-INF, -1.0, -2.0, -3.0]]
    lines = [{"task_id": d["task_id"], "loglikelihoods": lls} for d, lls in zip(docs, rows, strict=False)]
    summary, records = replay_run(tmp_path, "mmlu", lines)  # the replay file holds -Infinity and NaN
    verdicts = {r["task_id"]: r["verdict"] for r in records}
    for doc, lls in zip(docs, rows, strict=False):
        argmax_right = int(np.argmax(lls)) == doc["answer"]
        expected = "error" if any(np.isnan(lls)) else ("passed" if argmax_right else "failed")
        assert verdicts[doc["task_id"]] == expected, (doc["task_id"], lls)
    assert summary["verdicts"].get("error") == 1


def test_replayed_scores_micro_macro_and_per_subject(tmp_path, mmlu):
    _, docs = mmlu
    # abstract_algebra 100 questions, then anatomy 135: answer the first 100 right, and 27 of anatomy's.
    chosen = docs[:235]
    assert {d["subject"] for d in chosen} == {"abstract_algebra", "anatomy"}
    lines = []
    for i, d in enumerate(chosen):
        right = d["subject"] == "abstract_algebra" or i % 5 == 0
        pick = d["answer"] if right else (d["answer"] + 1) % 4
        lines.append({"task_id": d["task_id"], "loglikelihoods": [-1.0 if k == pick else -3.0 for k in range(4)]})
    anatomy_right = sum(1 for i, d in enumerate(chosen) if d["subject"] == "anatomy" and i % 5 == 0)
    assert anatomy_right == 27
    summary, records = replay_run(tmp_path, "mmlu", lines)
    assert summary["metrics"]["acc"] == pytest.approx(127 / 235)
    assert summary["metrics"]["acc_macro"] == pytest.approx((1.0 + 27 / 135) / 2)
    assert summary["per_subject"]["anatomy"] == {
        "acc": pytest.approx(0.2), "stderr": pytest.approx((0.2 * 0.8 * 135 / 134 / 135) ** 0.5), "n": 135}
    assert summary["per_subject"]["abstract_algebra"]["stderr"] == 0.0
    assert summary["stderr"]["acc_macro"] == pytest.approx(summary["per_subject"]["anatomy"]["stderr"] / 2)
    assert set(summary["stderr_method"]) == {"acc", "acc_macro"}
    record = records[0]
    assert record["extra"]["gold"] in "ABCD" and record["answer"] == record["extra"]["gold"]
    assert len(record["completion"]) == 4


def test_malformed_loglikelihoods_are_an_error_not_a_guess(mmlu):
    task, docs = mmlu
    assert task.score(docs[0], [0.0, -1.0]).verdict == "error"
    assert task.score(docs[0], [float("nan"), 0.0, 0.0, 0.0]).verdict == "error"
    gold = docs[0]["answer"]
    ranked_last = task.score(docs[0], [float("-inf") if k == gold else -1.0 for k in range(4)])
    assert ranked_last.verdict == "failed" and ranked_last.answer == ("B" if gold == 0 else "A")
    summary = task.aggregate([{"task_id": "x", "verdict": "error", "extra": {"subject": "anatomy"}}], SamplingParams())
    assert summary["metrics"]["acc"] == 0.0


def test_hub_rows(monkeypatch):
    def fake_hub_rows(repo, split, config=None, revision=None):
        assert (repo, config) == ("cais/mmlu", "all")
        rows = [{"question": f"{split} q{i}?", "subject": "virology", "choices": ["a", "b", "c", "d"], "answer": i % 4}
                for i in range(6)]
        return rows, {"source": "hub", "repo": repo, "split": split}

    monkeypatch.setattr(mmlu_task, "hub_rows", fake_hub_rows)
    task = get_task("mmlu", DataConfig(mirror=None))
    docs = task.docs()
    assert [d["task_id"] for d in docs] == [f"mmlu/virology/{i}" for i in range(6)]
    assert len(docs[0]["shots"]) == 5 and docs[0]["shots"][0]["question"] == "dev q0?"
    assert set(task.provenance["splits"]) == {"test", "dev"}
