"""CRUXEval-O and -I: the paper's prompts, its answer extraction, the reference self-check in the sandbox,
and per-sample agreement with CRUXEval's own execution check on replayed completions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from evalkit.data import DataConfig
from evalkit.requests import SamplingParams
from evalkit.tasks import get_task

MODES = ("cruxeval-o", "cruxeval-i")


@pytest.fixture(scope="module")
def tasks(data_dir):
    return {name: get_task(name, DataConfig(mirror=data_dir)) for name in MODES}


@pytest.fixture(scope="module")
def docs(tasks):
    return tasks["cruxeval-o"].docs()


def test_docs_and_prompts(tasks, docs):
    assert len(docs) == 800 and docs[0]["task_id"] == "sample_0"
    doc = docs[0]
    out = tasks["cruxeval-o"].request(doc)
    assert out.prompt.endswith(f"[PYTHON]\n{doc['code']}\nassert f({doc['input']}) == ??\n[/PYTHON]\n[ANSWER]\n")
    assert out.prompt.count("[ANSWER]") == 4 and 'assert f("x9j") == "x9ja"' in out.prompt
    inp = tasks["cruxeval-i"].request(doc)
    assert inp.prompt.endswith(f"[PYTHON]\n{doc['code']}\nassert f(??) == {doc['output']}\n[/PYTHON]\n[ANSWER]\n")
    assert 'assert f(["mq", "px", "zy"]) == 3' in inp.prompt
    assert out.stop == inp.stop == ("[/ANSWER]",)
    assert out.reference == f"assert f({doc['input']}) == {doc['output']}\n"


@pytest.mark.parametrize(("mode", "completion", "expected"), [
    ("cruxeval-o", "assert f([1]) == [2, 3]\n", "[2, 3]"),
    ("cruxeval-o", "assert f([1]) == 'a'\n[/ANSWER]\nmore text", "'a'"),
    ("cruxeval-o", "Let me think.\n[ANSWER]\nassert f(1) == 7\n[/ANSWER]", "7"),
    ("cruxeval-o", "5", "5"),
    ("cruxeval-i", "assert f('ab', 2) == 'abab'\n", "f('ab', 2)"),
    ("cruxeval-i", "f(3)", "f(3)"),
])
def test_answer_extraction(tasks, mode, completion, expected):
    assert tasks[mode].extract(completion) == expected


def test_calls_to_f_are_refused_in_output_predictions_and_required_in_input_ones(tasks, docs):
    doc = docs[0]
    cheat = tasks["cruxeval-o"].score(doc, f"assert f({doc['input']}) == f({doc['input']})", None)
    assert cheat.verdict == "failed" and "f(" in cheat.error
    bare = tasks["cruxeval-i"].score(doc, f"assert {doc['input']} == {doc['output']}", None)
    assert bare.verdict == "failed" and "f(" in bare.error


def test_published_setting_is_flagged(tasks):
    records = [{"task_id": "sample_0", "sample_index": i, "verdict": ["failed", "passed"][i < 3]} for i in range(10)]
    summary = tasks["cruxeval-o"].aggregate(records, SamplingParams(n=10, temperature=0.2, top_p=0.95))
    assert summary["metrics"]["pass@1"] == pytest.approx(0.3) and summary["published_setting"] is True
    assert tasks["cruxeval-o"].aggregate(records, SamplingParams(n=10))["published_setting"] is False


def run_all(sandbox, jobs):
    with ThreadPoolExecutor(max_workers=sandbox.size) as pool:
        return list(pool.map(lambda j: j[0].score(j[1], j[2], sandbox), jobs))


@pytest.mark.docker
@pytest.mark.parametrize("mode", MODES)
def test_reference_answers_pass(sandbox, tasks, docs, mode):
    task = tasks[mode]
    sample = docs[::4]  # every 4th problem: the full 800 run as `evalkit run --model reference`
    scored = run_all(sandbox, [(task, d, task.request(d).reference) for d in sample])
    assert {d["task_id"]: s.error for d, s in zip(sample, scored, strict=True) if not s.passed} == {}


def replayed_completions(docs: list[dict]) -> list[tuple[str, dict, str]]:
    """Right answers, wrong ones (another problem's values), an f( cheat, a syntax error and a timeout."""
    out = []
    for i, doc in enumerate(docs):
        other = docs[(i + 1) % len(docs)]
        out += [
            ("cruxeval-o", doc, f"assert f({doc['input']}) == {doc['output']}\n"),
            ("cruxeval-o", doc, f"assert f({doc['input']}) == {other['output']}\n"),
            ("cruxeval-i", doc, f"assert f({doc['input']}) == {doc['output']}\n"),
            ("cruxeval-i", doc, f"assert f({other['input']}) == {doc['output']}\n"),
        ]
    doc = docs[0]
    out += [
        ("cruxeval-o", doc, f"assert f({doc['input']}) == f({doc['input']})"),
        ("cruxeval-o", doc, f"assert f({doc['input']}) == [1, 2"),
        ("cruxeval-i", doc, "assert f(next(x for x in iter(int, 1) if x)) == 0"),  # never returns
    ]
    return out


def cruxeval_reference_verdict(mode: str, doc: dict, generation: str, check_correctness) -> bool:
    """CRUXEval's evaluation/utils_general.py evaluate_score on one generation, after its postprocessing."""
    if mode == "cruxeval-i":
        g = generation.split("==")[0].strip() if "==" in generation else generation
        g = g.split("assert")[1].strip() if "assert" in g else g
        if "f(" not in g:
            return False
    else:
        g = generation.split("==")[1].strip() if "==" in generation else generation.strip()
        if f"f({doc['input']})" in g:
            return False
    return check_correctness(f"{doc['code']}\nassert {doc['output']} == {g}", 3)


@pytest.mark.docker
def test_verdicts_agree_with_cruxeval_execution_check(sandbox, tasks, docs):
    # lm-evaluation-harness carries CRUXEval's check_correctness (utils_execute.py) verbatim.
    utils = pytest.importorskip("lm_eval.tasks.cruxeval.utils", reason="lm-eval (test extra) carries CRUXEval's check")
    jobs = replayed_completions(docs[:12])
    ours = run_all(sandbox, [(tasks[mode], doc, completion) for mode, doc, completion in jobs])
    theirs = [cruxeval_reference_verdict(mode, doc, c.strip(), utils.check_correctness) for mode, doc, c in jobs]
    assert [s.passed for s in ours] == theirs
    assert 0 < sum(theirs) < len(theirs)


def test_loads_from_the_hub_without_a_mirror(monkeypatch, docs):
    calls = []

    def fake_hub_rows(repo, split, config=None, revision=None):
        calls.append((repo, split, config))
        return [{k: d[k] for k in ("id", "code", "input", "output")} for d in docs[:3]], {"source": "hub"}

    monkeypatch.setattr("evalkit.data.hub_rows", fake_hub_rows)
    task = get_task("cruxeval-i", DataConfig())
    assert [d["task_id"] for d in task.docs()] == ["sample_0", "sample_1", "sample_2"]
    assert calls == [("cruxeval-org/cruxeval", "test", None)]
