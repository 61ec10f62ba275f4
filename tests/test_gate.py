"""`evalkit gate`: paired regression tests on real replayed HumanEval runs, and refusal of incomparable runs."""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import pytest
from replayed_runs import HUMANEVAL_SIZE, copy_run, humaneval_problems, replayed_run, task_ids
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.gate import IncomparableRuns, gate_runs, mcnemar_exact_p, paired_bootstrap_p
from evalkit.store import load_run

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / "results" / "baselines" / "humaneval-reference"
TEN_PERCENT = round(0.10 * HUMANEVAL_SIZE)



def gate(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["gate", *map(str, args)])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def base(sandbox) -> Path:
    return replayed_run("base")


# ------------------------------------------------------------------------------------------ the statistics


def test_mcnemar_exact_p_is_the_one_sided_binomial_tail():
    stats = pytest.importorskip("scipy.stats")
    for broken, fixed in [(16, 0), (1, 0), (3, 1), (4, 0), (7, 5), (0, 3)]:
        expected = stats.binomtest(broken, broken + fixed, 0.5, alternative="greater").pvalue
        assert mcnemar_exact_p(broken, fixed) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact_p(0, 0) == 1.0


def test_paired_bootstrap_p_separates_a_consistent_drop_from_noise():
    assert paired_bootstrap_p([-1.0] * 20 + [0.0] * 80) < 0.001
    one_problem = paired_bootstrap_p([-1.0] + [0.0] * 99)
    # P(the worse problem is never drawn in 100 draws) = (1 - 1/100)^100
    assert one_problem == pytest.approx((1 - 1 / 100) ** 100, abs=0.02)
    assert paired_bootstrap_p([0.0] * 50) == 1.0


# ------------------------------------------------------------------------------------------ one sample per problem


@pytest.mark.docker
@pytest.mark.slow
def test_gate_passes_a_run_against_itself(base):
    code, out = gate(base, base)
    assert code == 0, out
    assert "0 worse / 0 better" in out and "gate: pass" in out


@pytest.mark.docker
@pytest.mark.slow
def test_gate_fails_ten_percent_of_humaneval_flipped(base):
    flipped = task_ids(TEN_PERCENT, step=10)
    candidate = replayed_run("flip-10pct", wrong=flipped)
    code, out = gate(base, candidate, "--max-drop", "1.0", "--confidence", "0.95")
    assert code == 1, out
    assert f"{TEN_PERCENT} worse / 0 better" in out and "FAIL" in out
    [check] = gate_runs(load_run(base), load_run(candidate)).checks
    assert check.delta_pp == pytest.approx(-100 * TEN_PERCENT / HUMANEVAL_SIZE)
    assert check.p_value == pytest.approx(0.5**TEN_PERCENT)
    assert check.test == "McNemar exact"


@pytest.mark.docker
@pytest.mark.slow
def test_gate_passes_one_problem_flipped_even_without_tolerance(base):
    candidate = replayed_run("flip-1", wrong=task_ids(1))
    code, out = gate(base, candidate)
    assert code == 0, out
    assert "within the 1 pp tolerated" in out
    # With no tolerance the drop is judged by the test alone: one discordant problem, p = 1/2.
    code, out = gate(base, candidate, "--max-drop", "0")
    assert code == 0, out
    assert "not significant" in out and "1 worse / 0 better" in out


@pytest.mark.docker
@pytest.mark.slow
def test_confidence_decides_a_borderline_drop(sandbox):
    # 4 of 40 problems flipped: drop 10 pp, exact p = 1/16 = 0.0625.
    base40 = replayed_run("base-40", limit=40)
    candidate = replayed_run("flip-4-of-40", wrong=task_ids(4, step=7), limit=40)
    assert gate(base40, candidate, "--confidence", "0.95")[0] == 0
    assert gate(base40, candidate, "--confidence", "0.90")[0] == 1
    assert gate(base40, candidate, "--confidence", "0.90", "--max-drop", "10")[0] == 0  # within tolerance


@pytest.mark.docker
@pytest.mark.slow
def test_the_committed_baseline_gates_fresh_runs(base):
    """The baseline shipped for CI is a finished reference run that is comparable with today's harness."""
    results = json.loads((BASELINE / "results.json").read_text())
    assert results["config"]["backend"]["name"] == "reference"
    assert sum(p.stat().st_size for p in BASELINE.iterdir()) < 1_000_000
    assert gate(BASELINE, base)[0] == 0
    code, out = gate(BASELINE, replayed_run("flip-10pct", wrong=task_ids(TEN_PERCENT, step=10)))
    assert code == 1, out


# ------------------------------------------------------------------------------------------ several samples


@pytest.mark.docker
@pytest.mark.slow
def test_paired_bootstrap_for_pass_at_k(sandbox):
    base = replayed_run("base-10x20", limit=20, samples=10, temperature=0.8)
    worse = replayed_run("worse-10x20", wrong=task_ids(8), limit=20, samples=10, temperature=0.8)
    one_sample = replayed_run("one-sample-10x20", wrong_samples=(("HumanEval/3", 4),), limit=20, samples=10,
                              temperature=0.8)
    result = gate_runs(load_run(base), load_run(worse))
    assert {c.metric for c in result.checks} == {"pass@1", "pass@10"}
    assert all(c.failed and c.test == "paired bootstrap" and c.p_value < 0.01 for c in result.checks)
    assert all(math.isclose(c.delta_pp, -40.0) for c in result.checks)
    code, out = gate(base, one_sample, "--max-drop", "0")
    assert code == 0, out
    by_metric = {c.metric: c for c in gate_runs(load_run(base), load_run(one_sample), max_drop=0).checks}
    assert by_metric["pass@1"].delta_pp == pytest.approx(-100 * 0.1 / 20)
    assert by_metric["pass@10"].delta_pp == 0


# ------------------------------------------------------------------------------------------ incomparable runs


@pytest.mark.docker
@pytest.mark.slow
def test_refuses_a_different_problem_set(base):
    code, out = gate(base, replayed_run("base-40", limit=40))
    assert code == 2
    assert "not comparable" in out and "n_docs" in out and "only one run" in out
    with pytest.raises(IncomparableRuns) as info:
        gate_runs(load_run(replayed_run("base-40", limit=40)), load_run(base))
    assert any("124 samples are in only one run" in p for p in info.value.problems)


@pytest.mark.docker
@pytest.mark.slow
def test_refuses_different_sampling(sandbox):
    greedy = replayed_run("base-40", limit=40)
    sampled = replayed_run("sampled-40", limit=40, temperature=0.8)
    code, out = gate(greedy, sampled)
    assert code == 2 and "sampling.temperature" in out


@pytest.mark.docker
@pytest.mark.slow
def test_refuses_a_different_dataset_revision_and_prompt(sandbox, tmp_path):
    # A mirror whose HumanEval/0 prompt gained a line: another dataset file, another prompt.
    problems = humaneval_problems()
    problems[0]["prompt"] = problems[0]["prompt"].replace('    """\n', '    """\n    # edited\n', 1)
    (tmp_path / "humaneval").mkdir()
    with gzip.open(tmp_path / "humaneval" / "HumanEval.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(p) + "\n" for p in problems)
    edited = replayed_run("edited-dataset-40", limit=40, data_dir=tmp_path)
    code, out = gate(replayed_run("base-40", limit=40), edited)
    assert code == 2
    assert "dataset.files" in out and "prompt text differs on 1 problems (e.g. HumanEval/0)" in out


@pytest.mark.docker
@pytest.mark.slow
def test_refuses_a_different_prompt_setting(sandbox):
    copy = copy_run(replayed_run("base-40", limit=40), "other-prompt-setting")
    results = json.loads((copy / "results.json").read_text())
    results["config"]["tasks"]["humaneval"]["settings"]["prompt"] = "chat template, 3-shot"
    (copy / "results.json").write_text(json.dumps(results))
    code, out = gate(replayed_run("base-40", limit=40), copy)
    assert code == 2 and "settings.prompt" in out


@pytest.mark.docker
@pytest.mark.slow
def test_refuses_a_different_task_set(sandbox):
    base40 = replayed_run("base-40", limit=40)
    copy = copy_run(base40, "extra-task")
    results = json.loads((copy / "results.json").read_text())
    results["tasks"]["mbpp"] = dict(results["tasks"]["humaneval"])
    (copy / "results.json").write_text(json.dumps(results))
    code, out = gate(base40, copy)
    assert code == 2 and "different task sets" in out
    code, out = gate(base40, base40, "--tasks", "humaneval,mbpp")
    assert code == 2 and "mbpp: not evaluated" in out
    # Naming the shared task gates it.
    assert gate(base40, copy, "--tasks", "humaneval")[0] == 0


@pytest.mark.docker
@pytest.mark.slow
def test_refuses_an_unfinished_run(sandbox, tmp_path):
    copy = copy_run(replayed_run("base-40", limit=40), "unfinished")
    (copy / "results.json").unlink()
    code, out = gate(replayed_run("base-40", limit=40), copy)
    assert code == 2 and "unfinished run" in out
    shutil.rmtree(copy)


# ------------------------------------------------------------------------------------------ the CI example


def test_ci_example_uses_real_commands_and_the_committed_baseline():
    import shlex

    import typer.main
    import yaml

    text = (REPO / "docs" / "examples" / "checkpoint-gate.yml").read_text()
    assert text in (REPO / "docs" / "ci-gate.md").read_text(), "docs/ci-gate.md must embed the workflow verbatim"
    workflow = yaml.safe_load(text)
    assert (REPO / workflow["env"]["BASELINE"] / "samples.jsonl").is_file()
    scripts = [step["run"] for step in workflow["jobs"]["gate"]["steps"] if "run" in step]
    lines = [line.strip() for line in "\n".join(scripts).replace("\\\n", " ").splitlines()]
    calls = [shlex.split(line.split("|")[0].split(">")[0])[1:] for line in lines if line.startswith("evalkit ")]
    assert {c[0] for c in calls} >= {"run", "gate", "report", "compare"}
    root = typer.main.get_command(app)
    for args in calls:
        command = root
        while hasattr(command, "commands") and args and args[0] in command.commands:
            command, args = command.commands[args[0]], args[1:]
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        used = {a for a in args if a.startswith("--")}
        assert used <= known, f"{command.name}: unknown options {used - known}"
