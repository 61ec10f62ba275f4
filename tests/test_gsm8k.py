"""GSM8K: prompt and verdicts checked against lm-eval's own `gsm8k_cot` task on the same generations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from math_replay import replay_run

from evalkit.data import DataConfig
from evalkit.tasks import get_task

N_DOCS = 16


@pytest.fixture(scope="module")
def gsm8k(data_dir):
    task = get_task("gsm8k", DataConfig.from_options(str(data_dir)))
    return task, task.docs()


@pytest.fixture(scope="module")
def lm_eval_gsm8k_cot(data_dir, tmp_path_factory):
    """lm-eval's gsm8k_cot task, built from its own YAML, reading the first rows of the same test file."""
    import lm_eval
    from lm_eval.api.task import ConfigurableTask

    tmp = tmp_path_factory.mktemp("lm_eval_gsm8k")
    rows = (data_dir / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:N_DOCS]
    (tmp / "test.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k-cot.yaml").read_text())
    config.update(dataset_path="json", dataset_name=None,
                  dataset_kwargs={"data_files": {"test": str(tmp / "test.jsonl")}, "cache_dir": str(tmp / "cache")})
    return ConfigurableTask(config=config)


def lm_eval_verdicts(lm_task, doc: dict, completion: str) -> dict[str, bool]:
    """Run lm-eval's filters (strict-match, flexible-extract) and its exact_match on one generation."""
    from lm_eval.api.instance import Instance

    inst = Instance("generate_until", doc, ("", {}), 0, ("gsm8k_cot", 0, 1))
    inst.resps = [completion]
    for ensemble in lm_task._filters:
        ensemble.apply([inst])
    return {name: bool(lm_task.process_results(doc, [answer])["exact_match"])
            for name, answer in inst.filtered_resps.items()}


def test_docs_and_reference_completions(gsm8k):
    task, docs = gsm8k
    assert len(docs) == 1319 and docs[0]["task_id"] == "gsm8k/0" and docs[0]["answer"] == "18"
    ref = task.request(docs[0]).reference
    assert "<<" not in ref and ref.endswith("every day at the farmer’s market. The answer is 18.")
    assert all(task.score(d, task.request(d).reference).passed for d in docs)
    assert task.settings()["shots"] == 8


def test_prompt_and_stop_sequences_equal_lm_eval(gsm8k, lm_eval_gsm8k_cot):
    task, docs = gsm8k
    for doc, lm_doc in zip(docs[:3], lm_eval_gsm8k_cot.test_docs(), strict=False):
        assert task.request(doc).prompt == lm_eval_gsm8k_cot.fewshot_context(lm_doc, num_fewshot=8)
    assert list(task.request(docs[0]).stop) == lm_eval_gsm8k_cot.config.generation_kwargs["until"]


# Generations in the shapes models produce, each applied to one problem (g: its gold answer).
CASES = {
    "reference": lambda g: f" She sells them for {g} dollars. The answer is {g}.",
    "wrong": lambda g: f" The answer is {int(g) + 1}.",
    "no_period": lambda g: f" So {g} in total. The answer is {g}",
    "dollar_sign": lambda g: f" She has ${g} left. The answer is ${g}.",
    "hash_format": lambda g: f" In total {g}.\n#### {g}",
    "trailing_zeros": lambda g: f" The answer is {g}.00.",
    "thousands_comma": lambda g: f" The answer is {int(g):,}.",
    "ellipsis_after": lambda g: f" The answer is {g}. Let me double check...",
    "number_after": lambda g: f" The answer is {g}. That took 101 steps.",
    "negative": lambda g: f" The answer is -{g}.",
    "lowercase": lambda g: f" so the answer is {g}.",
    "units_after": lambda g: f" The answer is {g} dollars.",
    "half_more": lambda g: f" The answer is {g}.5.",
    "no_number": lambda g: " I do not know.",
    "calculation_last": lambda g: f" The answer is {g}. Check: {g} - 1 = {int(g) - 1}",
    "dollar_decimal": lambda g: f" It costs ${g}.00 in total.",
}

# evalkit's (strict_match, flexible_extract) verdict for each case, worked out by hand.
EXPECTED_VERDICTS = {
    "reference": (True, True), "wrong": (False, False), "no_period": (True, True), "dollar_sign": (True, True),
    "hash_format": (True, True), "trailing_zeros": (True, True), "thousands_comma": (True, True),
    "ellipsis_after": (True, True), "number_after": (True, False), "negative": (False, False),
    "lowercase": (False, True), "units_after": (True, True), "half_more": (False, False),
    "no_number": (False, False), "calculation_last": (True, False), "dollar_decimal": (False, True),
}

# Where evalkit and lm-eval disagree, by design (the rules), and why.
EXPECTED_DISAGREEMENTS = {
    ("no_period", "strict_match"): "lm-eval's strict regex needs a character after the number, so it keeps "
                                   "all but the last digit (or nothing) when the completion ends on the number",
    ("dollar_sign", "strict_match"): "lm-eval's strict regex allows no '$' before the number",
    ("hash_format", "strict_match"): "evalkit's strict match also accepts the dataset's '#### N' format",
    ("trailing_zeros", "strict_match"): "evalkit compares numerically (18.00 == 18); lm-eval compares strings",
    ("trailing_zeros", "flexible_extract"): "same: numeric 18.00 == 18 against lm-eval's string match",
    ("ellipsis_after", "flexible_extract"): "lm-eval's flexible regex takes '...' as the last 'number'",
    ("dollar_decimal", "flexible_extract"): "numeric comparison again: $18.00 is 18 for evalkit",
}


def test_verdicts_agree_with_lm_eval_except_the_listed_cases(gsm8k, lm_eval_gsm8k_cot, tmp_path):
    task, docs = gsm8k
    lm_docs = lm_eval_gsm8k_cot.test_docs()
    assert len(CASES) == N_DOCS
    lines, disagreements, ours_by_case = [], {}, {}
    for (case, make), doc, lm_doc in zip(CASES.items(), docs, lm_docs, strict=False):
        completion = make(doc["answer"])
        lines.append({"task_id": doc["task_id"], "completion": completion})
        extra = task.score(doc, completion).extra
        ours = {metric: extra[metric]["passed"] for metric in ("strict_match", "flexible_extract")}
        theirs = lm_eval_verdicts(lm_eval_gsm8k_cot, lm_doc, completion)
        theirs = {"strict_match": theirs["strict-match"], "flexible_extract": theirs["flexible-extract"]}
        ours_by_case[case] = ours
        for metric in ours:
            if ours[metric] != theirs[metric]:
                disagreements[(case, metric)] = (ours[metric], theirs[metric])
    assert set(disagreements) == set(EXPECTED_DISAGREEMENTS), disagreements
    assert all(ours for ours, _ in disagreements.values())  # each time, evalkit is the one accepting

    # The same generations replayed through the runner: scores side by side, exactly as tallied here.
    summary, records = replay_run(tmp_path, "gsm8k", lines)
    assert {case: (v["strict_match"], v["flexible_extract"]) for case, v in ours_by_case.items()} == EXPECTED_VERDICTS
    strict = sum(s for s, _ in EXPECTED_VERDICTS.values())
    flexible = sum(f for _, f in EXPECTED_VERDICTS.values())
    assert summary["metrics"] == {"strict_match": pytest.approx(strict / N_DOCS),
                                  "flexible_extract": pytest.approx(flexible / N_DOCS)}
    assert summary["verdicts"] == {"passed": strict, "failed": N_DOCS - strict}
    first = records[0]
    assert first["extra"]["gold"] == "18" and first["answer"] == "18" and first["completion"] == lines[0]["completion"]


def test_majority_vote_over_numbers(tmp_path, gsm8k):
    _, docs = gsm8k
    samples = {  # golds 18 and 3
        docs[0]["task_id"]: [" The answer is 18.", " The answer is 18.00.", " The answer is 20."],
        docs[1]["task_id"]: [" The answer is 4.", " The answer is 4.", " It is 3 bolts"],
    }
    lines = [{"task_id": tid, "completion": c} for tid, cs in samples.items() for c in cs]
    summary, _ = replay_run(tmp_path, "gsm8k", lines)
    assert summary["metrics"] == {
        "strict_match": pytest.approx((2 / 3 + 0) / 2),
        "strict_match_maj@3": pytest.approx(0.5),
        "flexible_extract": pytest.approx((2 / 3 + 1 / 3) / 2),
        "flexible_extract_maj@3": pytest.approx(0.5),
    }


def test_hub_rows(monkeypatch):
    def fake_hub_rows(repo, split, config=None, revision=None):
        assert (repo, split, config) == ("openai/gsm8k", "test", "main")
        return [{"question": "2+2?", "answer": "2+2=<<2+2=4>>4\n#### 4"}], {"source": "hub", "repo": repo}

    monkeypatch.setattr("evalkit.data.hub_rows", fake_hub_rows)
    task = get_task("gsm8k", DataConfig(mirror=None))
    docs = task.docs()
    assert docs[0]["task_id"] == "gsm8k/0" and task.request(docs[0]).reference == " 2+2=4 The answer is 4."
    assert task.provenance["repo"] == "openai/gsm8k"
    json.dumps(task.settings())  # settings go into results.json
