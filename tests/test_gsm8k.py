"""GSM8K: prompt, stops and verdicts checked against lm-eval's own `gsm8k_cot` task on the same generations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from math_replay import replay_run

from evalkit.answer_extraction import GSM8K_EXACT_MATCH_IGNORE, GSM8K_FLEXIBLE_EXTRACT_RE, GSM8K_STRICT_MATCH_RE
from evalkit.data import DataConfig
from evalkit.tasks import get_task
from tasks import _prompts
from tasks.gsm8k import METRICS

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


def lm_eval_yaml() -> dict:
    import lm_eval

    return yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k-cot.yaml").read_text())


def test_regexes_and_exact_match_settings_are_lm_evals():
    config = lm_eval_yaml()
    filters = {f["name"]: f["filter"] for f in config["filter_list"]}
    assert filters["strict-match"] == [{"function": "regex", "regex_pattern": GSM8K_STRICT_MATCH_RE.pattern},
                                       {"function": "take_first"}]
    assert filters["flexible-extract"] == [{"function": "regex", "group_select": -1,
                                            "regex_pattern": GSM8K_FLEXIBLE_EXTRACT_RE.pattern},
                                           {"function": "take_first"}]
    (metric,) = config["metric_list"]
    assert metric["metric"] == "exact_match" and metric["ignore_case"] and not metric["ignore_punctuation"]
    assert tuple(metric["regexes_to_ignore"]) == GSM8K_EXACT_MATCH_IGNORE
    assert tuple(config["generation_kwargs"]["until"]) == _prompts.GSM8K_COT_STOP  # "</s>" among them


# Held-out-style generations (g: the problem's gold answer): the gold as the exemplars write it, rewrites,
# mutants and unusual shapes. Each is scored on problem i % 16.
CASES = {
    "reference": lambda g: f" She sells them for {g} dollars. The answer is {g}.",
    "exclamation": lambda g: f" The answer is {g}!",
    "units_after": lambda g: f" The answer is {g} dollars.",
    "no_period": lambda g: f" So {g} in total. The answer is {g}",
    "newline_after": lambda g: f" The answer is {g}\nDone.",
    "dollar_sign": lambda g: f" She has ${g} left. The answer is ${g}.",
    "dollar_space": lambda g: f" The answer is $ {g}.",
    "two_spaces": lambda g: f" The answer is  {g}.",
    "hash_format": lambda g: f" In total {g}.\n#### {g}",
    "hash_only": lambda g: f"#### {g}",
    "trailing_zeros": lambda g: f" The answer is {g}.00.",
    "trailing_zero": lambda g: f" The answer is {g}.0",
    "leading_zero": lambda g: f" The answer is 0{g}.",
    "thousands_comma": lambda g: f" The answer is {int(g):,}.",
    "odd_comma": lambda g: f" The answer is {g[:1]},{g[1:]}.",
    "ellipsis_after": lambda g: f" The answer is {g}. Let me double check...",
    "number_after": lambda g: f" The answer is {g}. That took 101 steps.",
    "second_answer": lambda g: f" The answer is {g}.\nThe answer is {int(g) + 7}.",
    "first_answer_wrong": lambda g: f" The answer is {int(g) + 7}. No wait. The answer is {g}.",
    "negative": lambda g: f" The answer is -{g}.",
    "off_by_one": lambda g: f" The answer is {int(g) + 1}.",
    "half_more": lambda g: f" The answer is {g}.5.",
    "lowercase": lambda g: f" so the answer is {g}.",
    "uppercase": lambda g: f" THE ANSWER IS {g}.",
    "answer_colon": lambda g: f" Answer: {g}",
    "bare_number": lambda g: f"{g}",
    "boxed": lambda g: f" The answer is $\\boxed{{{g}}}$.",
    "percent": lambda g: f" The answer is {g}%.",
    "spaced_digits": lambda g: f" The answer is {' '.join(g)}.",
    "no_number": lambda g: " I do not know.",
    "empty": lambda g: "",
    "calculation_last": lambda g: f" The answer is {g}. Check: {g} - 1 = {int(g) - 1}",
    "dollar_decimal": lambda g: f" It costs ${g}.00 in total.",
    "decimal_point_only": lambda g: f" The answer is {g}. ",
    "words_then_number": lambda g: f" Eighteen, or {g}, is the answer.",
    "unicode_minus": lambda g: f" The answer is \u2212{g}.",
    "hash_after_answer": lambda g: f" The answer is {g}.\n#### {g}",
    "decimal_comma": lambda g: f" The answer is {g},00.",
    "plus_sign": lambda g: f" The answer is +{g}.",
    "exponent": lambda g: f" The answer is {g}e0.",
    "parenthesised": lambda g: f" The answer is ({g}).",
    "colon_after": lambda g: f" The answer is: {g}.",
    "double_period": lambda g: f" The answer is {g}..",
    "comma_after": lambda g: f" The answer is {g}, I think.",
    "currency_code": lambda g: f" The answer is {g} USD",
    "over_one": lambda g: f" The answer is {g}/1.",
    "number_on_next_paragraph": lambda g: f" The answer is {g}.\n\n5",
    "tab": lambda g: f" The answer is\t{g}.",
}

# Where evalkit's own numeric_match (not an lm-eval metric) differs from lm-eval's strict-match, and why.
NUMERIC_MATCH_DIFFERS_FROM_STRICT = {
    "no_period": "strict-match needs one character after the number, so it keeps all but the last digit",
    "newline_after": "the same: strict-match's '.' does not match a newline",
    "dollar_sign": "strict-match allows no '$' before the number",
    "dollar_space": "the same, with a space",
    "two_spaces": "strict-match allows exactly one space after 'The answer is'",
    "hash_format": "numeric_match also reads the dataset's own '#### N'",
    "hash_only": "the same",
    "trailing_zeros": "numeric_match compares numbers (18.00 == 18); exact_match compares strings",
    "tab": "strict-match wants one space after 'The answer is', not a tab",
    "leading_zero": "numbers again: 018 == 18",
}


def test_metrics_named_after_lm_eval_equal_lm_eval_on_every_sample(gsm8k, lm_eval_gsm8k_cot, tmp_path):
    task, docs = gsm8k
    lm_docs = list(lm_eval_gsm8k_cot.test_docs())
    assert len(CASES) == 3 * N_DOCS
    lines, ours_by_case, theirs_by_case = [], {}, {}
    for i, (case, make) in enumerate(CASES.items()):
        doc, lm_doc = docs[i % N_DOCS], lm_docs[i % N_DOCS]
        completion = make(doc["answer"])
        lines.append({"task_id": doc["task_id"], "completion": completion})
        extra = task.score(doc, completion).extra
        ours_by_case[case] = {metric: extra[metric]["passed"] for metric in METRICS}
        theirs = lm_eval_verdicts(lm_eval_gsm8k_cot, lm_doc, completion)
        theirs_by_case[case] = {"strict_match": theirs["strict-match"], "flexible_extract": theirs["flexible-extract"]}
    for metric in ("strict_match", "flexible_extract"):
        assert {c: v[metric] for c, v in ours_by_case.items()} == {c: v[metric] for c, v in theirs_by_case.items()}
    differ = {c for c, v in ours_by_case.items() if v["numeric_match"] != v["strict_match"]}
    assert differ == set(NUMERIC_MATCH_DIFFERS_FROM_STRICT)
    assert all(ours_by_case[c]["numeric_match"] for c in differ)  # each time, the lenient metric is the one accepting
    # Both lm-eval metrics meet cases that pass and cases that fail, so the comparison can tell them apart.
    for metric in ("strict_match", "flexible_extract"):
        assert 5 <= sum(v[metric] for v in theirs_by_case.values()) <= len(CASES) - 5

    # The same generations replayed through the runner (three samples a problem): the metrics side by side.
    summary, records = replay_run(tmp_path, "gsm8k", sorted(lines, key=lambda line: int(line["task_id"].split("/")[1])))
    expected = {metric: sum(v[metric] for v in ours_by_case.values()) / len(CASES) for metric in METRICS}
    assert {k: summary["metrics"][k] for k in METRICS} == pytest.approx(expected)
    assert summary["samples_per_problem"] == 3
    assert records[0]["extra"]["gold"] == "18" and records[0]["answer"] == "18"


def test_text_after_a_stop_sequence_is_not_scored(gsm8k, tmp_path):
    """Replayed completions are cut at the task's stops ("Q:", "</s>", "<|im_end|>") before scoring."""
    _, docs = gsm8k
    tails = ["\n\nQ: Tom has 5 apples. A: The answer is 99.", "</s> Then 99 more.", "<|im_end|>\n99"]
    lines = [{"task_id": d["task_id"], "completion": f" The answer is {d['answer']}.{tail}"}
             for d, tail in zip(docs, tails, strict=False)]
    summary, records = replay_run(tmp_path, "gsm8k", lines)
    # Uncut, flexible-extract would read 99 every time.
    assert summary["metrics"]["flexible_extract"] == 1.0 and summary["metrics"]["strict_match"] == 1.0
    assert [r["completion"] for r in records] == [line["completion"] for line in lines]  # the raw text is kept
    assert [r["extra"]["flexible_extract"]["answer"] for r in records] == [f"{d['answer']}." for d in docs[:3]]


def test_majority_vote_over_numbers(tmp_path, gsm8k):
    _, docs = gsm8k
    samples = {  # golds 18 and 3
        docs[0]["task_id"]: [" The answer is 18.", " The answer is 18.00.", " The answer is 20."],
        docs[1]["task_id"]: [" The answer is 4.", " The answer is 4.", " It is 3 bolts"],
    }
    lines = [{"task_id": tid, "completion": c} for tid, cs in samples.items() for c in cs]
    summary, _ = replay_run(tmp_path, "gsm8k", lines)
    assert summary["metrics"] == {
        "strict_match": pytest.approx((1 / 3 + 0) / 2),  # "18.00" is not "18" for exact_match
        "strict_match_maj@3": pytest.approx(0.5),  # three singletons on the first problem: the first wins
        "flexible_extract": pytest.approx((1 / 3 + 1 / 3) / 2),
        "flexible_extract_maj@3": pytest.approx(0.5),
        "numeric_match": pytest.approx((2 / 3 + 0) / 2),
        "numeric_match_maj@3": pytest.approx(0.5),  # 18 and 18.00 vote together
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
