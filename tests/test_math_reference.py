"""MATH-500 and AIME verdicts against math-verify, the reference scorer, on held-out-style completions.

The reference is run here as lm-eval's minerva_math500 runs it: `verify(parse(solution), parse(completion))`
(for AIME, whose solutions box other things, the gold answer in math: `parse("$gold$")`). Completions are
cut at the task's stop sequences first, as lm-eval's backends and evalkit's runner do.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from math_replay import replay_run

from evalkit.data import DataConfig
from evalkit.math_equivalence import exact_number
from evalkit.sanitize import truncate_at_stop
from evalkit.tasks import get_task
from tasks import _prompts

N_DOCS = 16


def math_verify_equal(gold_text: str, completion: str) -> bool:
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return bool(verify(gold=parse(gold_text), target=parse(completion)))


def _bump(answer: str) -> str:
    m = re.search(r"\d", answer)
    return answer + "+1" if m is None else answer[: m.start()] + str((int(m.group()) + 1) % 10) + answer[m.end() :]


def _dfrac(answer: str) -> str:
    return answer.replace("\\frac", "\\dfrac")


# Held-out-style completions for a problem with gold answer g: gold shapes, rewrites, mutants, odd shapes.
CASES: dict[str, Callable[[str], str]] = {
    "minerva": lambda g: f"We compute it, so $\\boxed{{{g}}}$.\nFinal Answer: The final answer is ${g}$. "
                         "I hope it is correct.",
    "box_only": lambda g: f"Thus $\\boxed{{{g}}}$.",
    "box_no_dollars": lambda g: f"The answer is \\boxed{{{g}}}",
    "box_in_display_math": lambda g: f"\\[ y = \\boxed{{{g}}} \\]",
    "fbox": lambda g: f"$\\fbox{{{g}}}$",
    "box_spaced": lambda g: f"$\\boxed{{ {g} }}$",
    "box_dfrac": lambda g: f"$\\boxed{{{_dfrac(g)}}}$",
    "box_assignment": lambda g: f"$\\boxed{{x = {g}}}$",
    "box_text": lambda g: f"$\\boxed{{\\text{{{g}}}}}$",
    "box_left_right": lambda g: f"$\\boxed{{\\left({g}\\right)}}$",
    "box_period": lambda g: f"$\\boxed{{{g}.}}$",
    "box_percent": lambda g: f"$\\boxed{{{g}\\%}}$",
    "box_dollar_unit": lambda g: f"$\\boxed{{\\${g}}}$",
    "box_units": lambda g: f"$\\boxed{{{g}\\text{{ cm}}}}$",
    "box_then_number": lambda g: f"$\\boxed{{{g}}}$. This took 3 steps.",
    "box_then_math": lambda g: f"$\\boxed{{{g}}}$, not ${_bump(g)}$.",
    "wrong_box": lambda g: f"Thus $\\boxed{{{_bump(g)}}}$.",
    "negated_box": lambda g: f"$\\boxed{{-{g}}}$",
    "first_box_wrong": lambda g: f"First $\\boxed{{{_bump(g)}}}$, corrected: $\\boxed{{{g}}}$.",
    "last_box_wrong": lambda g: f"First $\\boxed{{{g}}}$, then $\\boxed{{{_bump(g)}}}$.",
    "cut_off_in_box": lambda g: f"so $\\boxed{{{g}",
    "sentence_only": lambda g: f"Final Answer: The final answer is ${g}$. I hope it is correct.",
    "sentence_no_dollars": lambda g: f"Final Answer: The final answer is {g}. I hope it is correct.",
    "sentence_boxed": lambda g: f"Final Answer: The final answer is $\\boxed{{{g}}}$. I hope it is correct.",
    "box_right_sentence_wrong": lambda g: f"$\\boxed{{{g}}}$\nFinal Answer: The final answer is ${_bump(g)}$. "
                                          "I hope it is correct.",
    "box_wrong_sentence_right": lambda g: f"$\\boxed{{{_bump(g)}}}$\nFinal Answer: The final answer is ${g}$. "
                                          "I hope it is correct.",
    "free_final_answer": lambda g: f"So the final answer is ${g}$.",
    "free_final_answer_no_dollars": lambda g: f"So the final answer is {g}.",
    "free_wrong_then_box": lambda g: f"The final answer is ${_bump(g)}$.\nActually $\\boxed{{{g}}}$.",
    "sentence_then_free_wrong": lambda g: f"Final Answer: The final answer is ${g}$. I hope it is correct.\n"
                                          f"So the final answer is ${_bump(g)}$.",
    "answer_word_then_math": lambda g: f"The answer is ${g}$. We can check with $x = 1$.",
    "answer_colon": lambda g: f"Answer: ${g}$",
    "bold_answer_no_math": lambda g: f"**Answer:** {g}",
    "last_math_span": lambda g: f"The result is ${g}$.",
    "display_dollars": lambda g: f"So\n$$ {g} $$",
    "paren_math": lambda g: f"So we get \\({g}\\).",
    "math_then_number": lambda g: f"We have ${g}$ and 7 more",
    "bare_text": lambda g: f"The result is {g}",
    "no_answer": lambda g: "I am not sure how to solve this.",
}

# evalkit's deliberate differences from math-verify, each with its reason. They arise only for golds that are not
# plain numbers.
DELIBERATE = {
    "sentence_no_dollars": "evalkit reads the answer of Minerva's closing sentence with or without $...$; "
                           "math-verify reads no LaTeX outside math delimiters (p - q, \\sqrt{51} fail there)",
    "free_final_answer_no_dollars": "evalkit reads the whole stated answer after 'the final answer is'; without "
                                    "math delimiters math-verify takes only its leading number (3 of 3\\sqrt{13})",
}


@pytest.fixture(scope="module")
def math500(data_dir):
    task = get_task("math500", DataConfig.from_options(str(data_dir)))
    return task, task.docs()[:N_DOCS]


def compare(task, docs, golds_in_math: list[str]) -> tuple[dict, list[dict]]:
    """Score every case on every doc with evalkit and math-verify; (disagreements, replay lines)."""
    stop = task.request(docs[0]).stop
    disagreements, lines = {}, []
    for case, make in CASES.items():
        for doc, gold_text in zip(docs, golds_in_math, strict=True):
            completion = make(doc["answer"])
            lines.append({"task_id": doc["task_id"], "completion": completion})
            cut = truncate_at_stop(completion, stop)
            ours = task.score(doc, cut).verdict == "passed"
            theirs = math_verify_equal(gold_text, cut)
            if ours != theirs:
                disagreements[(case, doc["task_id"])] = (ours, theirs)
    return disagreements, lines


def check_disagreements(disagreements: dict, docs: list[dict]) -> None:
    numeric = {d["task_id"] for d in docs if exact_number(d["answer"]) is not None}
    assert {case for case, _ in disagreements} == set(DELIBERATE), disagreements  # each listed one occurs
    for (case, task_id), (ours, theirs) in disagreements.items():
        assert ours and not theirs and task_id not in numeric, (case, task_id)


@pytest.mark.slow
def test_math500_verdicts_equal_math_verify_except_the_listed_cases(math500, tmp_path):
    task, docs = math500
    disagreements, lines = compare(task, docs, [d["solution"] for d in docs])
    check_disagreements(disagreements, docs)
    assert len(lines) == len(CASES) * N_DOCS

    # The first case of each kind replayed through the runner gives the verdicts scored here.
    sample = [line for line in lines if line["task_id"] == docs[0]["task_id"]]
    summary, records = replay_run(tmp_path, "math500", sample[:8])
    assert [r["verdict"] for r in sorted(records, key=lambda r: r["sample_index"])] == [
        task.score(docs[0], line["completion"]).verdict for line in sample[:8]]
    assert summary["samples_per_problem"] == 8


@pytest.mark.slow
def test_aime_verdicts_equal_math_verify_except_the_listed_cases(data_dir):
    task = get_task("aime24", DataConfig.from_options(str(data_dir)))
    docs = task.docs()[:N_DOCS]
    disagreements, _ = compare(task, docs, [f"${d['answer']}$" for d in docs])
    assert disagreements == {}  # AIME answers are plain numbers; none of the deliberate cases applies


def test_minerva_stops_equal_lm_evals_and_text_after_them_is_not_scored(math500, tmp_path):
    import lm_eval

    class IgnoreTags(yaml.SafeLoader):  # lm-eval's task YAML uses !function tags
        pass

    IgnoreTags.add_multi_constructor("!", lambda loader, suffix, node: None)
    folder = Path(lm_eval.__file__).parent / "tasks" / "minerva_math"
    config = yaml.load((folder / "minerva_math_algebra.yaml").read_text(), Loader=IgnoreTags)
    assert tuple(config["generation_kwargs"]["until"]) == _prompts.MINERVA_STOP == ("Problem:",)  # no "</s>"

    task, docs = math500
    tail = "\n\nProblem:\nWhat is $1+1$?\n\nSolution: $\\boxed{2}$\nFinal Answer: The final answer is $2$. " \
           "I hope it is correct."
    lines = [{"task_id": d["task_id"], "completion": CASES["minerva"](d["answer"]) + tail} for d in docs[:4]]
    summary, records = replay_run(tmp_path, "math500", lines)
    assert summary["metrics"]["accuracy"] == 1.0  # uncut, every completion would answer 2
    assert [r["answer"] for r in records] == [d["answer"] for d in docs[:4]]
    assert all(r["completion"].endswith(tail) for r in records)  # the raw text is kept
    assert not task.score(docs[0], lines[0]["completion"]).passed  # what scoring the uncut text would do
