"""The Python sanitizer: the same trimming as dropping one line at a time, in a bounded number of parses."""

from __future__ import annotations

import ast
import random
import warnings

import pytest

from evalkit import sanitize
from evalkit.sanitize import FENCE, sanitize_python_completion, truncate_at_stop


def one_line_at_a_time(prompt: str, completion: str, stop: tuple[str, ...]) -> str:
    """The unbounded original: drop the last line until prompt + the rest parses."""
    text = truncate_at_stop(completion, stop)
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if FENCE.match(line):
            lines = lines[:i]
            break

    def parses(source: str) -> bool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ast.parse(source)
            except (SyntaxError, ValueError):
                return False
        return True

    while lines and not parses(prompt + "\n".join(lines)):
        lines.pop()
    return "\n".join(lines).rstrip() + "\n" if lines else text


@pytest.fixture(scope="module")
def humaneval(data_dir):
    from evalkit.data import DataConfig
    from evalkit.tasks import get_task

    return get_task("humaneval", DataConfig(mirror=data_dir)).docs()


def test_trims_as_the_one_line_at_a_time_sanitizer_did(humaneval):
    """On 4,920 completions cut off at random points (a model stopped by max_tokens), the result is the same."""
    rng = random.Random(0)
    for doc in humaneval:
        solution = doc["canonical_solution"] + "\n\ndef extra(a, b):\n    return [a,\n        b] + helper(\n"
        for _ in range(30):
            cut = solution[: rng.randrange(len(solution) + 1)]
            assert sanitize_python_completion(doc["prompt"], cut, ()) == one_line_at_a_time(doc["prompt"], cut, ())


@pytest.mark.parametrize(("completion", "kept"), [
    ("    return x\n    y = (1,\n", "    return x\n"),
    ("    if x:\n        return 1\n    else:\n", "    if x:\n        return 1\n"),
    ("    return x\n```\nmore prose", "    return x\n"),
    ("    return [\n", "    return [\n"),  # nothing parses: the text stays, so the error shows what was written
])
def test_trims_trailing_lines_that_do_not_parse(completion, kept):
    assert sanitize_python_completion("def f(x):\n    \"\"\"doc\"\"\"\n", completion, ()) == kept


def count_parses(monkeypatch) -> list[str]:
    parsed: list[str] = []
    real = sanitize._error_line

    def counting(source: str):
        parsed.append(source)
        return real(source)

    monkeypatch.setattr(sanitize, "_error_line", counting)
    return parsed


def test_a_huge_completion_that_never_parses_costs_one_parse(monkeypatch):
    parsed = count_parses(monkeypatch)
    completion = "x = (\n" + "garbage garbage\n" * 20_000  # took 279 s, one parse per line
    assert sanitize_python_completion("def f():\n", completion, ()) == completion
    assert len(parsed) == 1


def test_parses_are_bounded_whatever_the_text(monkeypatch):
    parsed = count_parses(monkeypatch)
    # deeper and deeper blocks: every prefix fails at its end, so each parse moves back one line only
    completion = "".join("    " * (depth + 1) + "if x:\n" for depth in range(90))
    assert sanitize_python_completion("def f(x):\n", completion, ()) == completion
    assert len(parsed) == sanitize.MAX_PARSES
