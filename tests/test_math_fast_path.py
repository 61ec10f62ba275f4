"""The string/number fast path of answer equivalence decides only as math-verify would.

math-verify is run here as the reference, on answers as they stand in solutions and completions:
`verify(parse("$\\boxed{gold}$"), parse("$\\boxed{answer}$"))`. Every pair the fast path decides (equal or
not) must get the same verdict from math-verify; pairs it leaves open go to math-verify anyway.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalkit.math_equivalence import answers_equivalent, fast_equivalence


def math_verify_equal(gold: str, answer: str) -> bool:
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return bool(verify(parse(f"$\\boxed{{{gold}}}$"), parse(f"$\\boxed{{{answer}}}$")))


@pytest.fixture(scope="module")
def golds(data_dir) -> list[str]:
    lines = (data_dir / "math" / "math500_test.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["answer"] for line in lines]


def _bump_first_digit(s: str) -> str | None:
    m = re.search(r"\d", s)
    return None if m is None else s[: m.start()] + str((int(m.group()) + 1) % 10) + s[m.end() :]


def _digits(s: str) -> str | None:
    plain = s.replace(",", "").replace("\\!", "").replace(" ", "")
    return plain if plain.isdigit() else None


def _grouped(s: str, separator: str) -> str | None:
    return f"{int(s):,}".replace(",", separator) if s.isdigit() else None


# Spellings models write, and mutants. None: the rewrite does not apply to this answer.
REWRITES: dict[str, Callable[[str], str | None]] = {
    "math_dollars": lambda s: f"${s}$",
    "spaced_out": lambda s: " ".join(s),
    "no_spaces": lambda s: s.replace(" ", ""),
    "space_after_comma": lambda s: s.replace(",", ", "),
    "no_space_after_comma": lambda s: s.replace(", ", ","),
    "dfrac": lambda s: s.replace("\\frac", "\\dfrac"),
    "frac_space": lambda s: s.replace("\\frac{", "\\frac {"),
    "short_frac": lambda s: re.sub(r"\\frac\{(\d)\}\{(\d)\}", r"\\frac\1\2", s),
    "slash_frac": lambda s: re.sub(r"\\frac\{(\d+)\}\{(\d+)\}", r"\1/\2", s),
    "short_sqrt": lambda s: re.sub(r"\\sqrt\{(\d)\}", r"\\sqrt\1", s),
    "sqrt_space": lambda s: s.replace("\\sqrt", "\\sqrt "),
    "left_right": lambda s: s.replace("(", "\\left(").replace(")", "\\right)"),
    "no_left_right": lambda s: s.replace("\\left", "").replace("\\right", ""),
    "closing_period": lambda s: s + ".",
    "x_equals": lambda s: "x=" + s,
    "y_spaced_equals": lambda s: "y = " + s,
    "k_equals": lambda s: "k=" + s,
    "e_equals": lambda s: "e=" + s,  # Euler's number for math-verify
    "I_equals": lambda s: "I=" + s,  # the imaginary unit for math-verify
    "i_equals": lambda s: "i=" + s,
    "x_equals_digits": lambda s: "x=" + s.replace(",", ""),
    "text": lambda s: f"\\text{{{s}}}",
    "mbox": lambda s: f"\\mbox{{{s}}}",
    "degrees": lambda s: s + "^\\circ",
    "percent": lambda s: s + "\\%",
    "bare_percent": lambda s: s + "%",
    "dollar_unit": lambda s: "\\$" + s,
    "thin_space_after_comma": lambda s: s.replace(",", ",\\!"),
    "thin_spaces": lambda s: s.replace(" ", "\\,"),
    "digits_only": _digits,
    "thousands_comma": lambda s: _grouped(s, ","),
    "thousands_glue": lambda s: _grouped(s, ",\\!"),
    "thousands_braces": lambda s: _grouped(s, "{,}"),
    "thousands_comma_space": lambda s: _grouped(s, ", "),
    "trailing_zero": lambda s: s + ".0" if s.isdigit() else None,
    "leading_zero": lambda s: "0" + s,
    "no_leading_zero": lambda s: s[1:] if s.startswith("0.") else None,
    "bump_digit": _bump_first_digit,
    "negated": lambda s: "-" + s,
    "halved": lambda s: s + "/2",
    "plus_to_minus": lambda s: s.replace("+", "-"),
}


def disagreements(pairs: list[tuple[str, str, str]]) -> tuple[int, list[tuple]]:
    """(pairs the fast path decided, those where math-verify says otherwise)."""
    decided, differ = 0, []
    for name, gold, answer in pairs:
        fast = fast_equivalence(gold, answer)
        if fast is None:
            continue
        decided += 1
        reference = math_verify_equal(gold, answer)
        if fast.equal != reference:
            differ.append((name, gold, answer, fast, reference))
    return decided, differ


def test_the_dropped_variable_cases_of_the_issue():
    for gold, answer in (("y = 2x + 3", "x = 2x + 3"), ("x=5", "y = 5")):
        assert fast_equivalence(gold, answer) is None and not math_verify_equal(gold, answer)
        assert not answers_equivalent(gold, answer).equal
    # The assignment goes only when the other side is no equation, as in math-verify.
    assert fast_equivalence("x=5", "5").equal and fast_equivalence("5", "y = 5").equal
    assert fast_equivalence("x=5", "x = 5").equal
    assert fast_equivalence("e=5", "5") is None and not math_verify_equal("e=5", "5")


@pytest.mark.slow
def test_every_gold_against_itself_and_the_equal_looking_pairs_of_others(golds):
    pairs = [("self", g, g) for g in golds]
    distinct = sorted(set(golds))
    cross = {(a, b): fast for a in distinct for b in distinct if a != b and (fast := fast_equivalence(a, b))}
    accepted = [("cross_equal", a, b) for (a, b), fast in cross.items() if fast.equal]
    rejected = [("cross_differ", a, b) for (a, b), fast in cross.items() if not fast.equal]
    pairs += accepted + random.Random(12).sample(rejected, 150)
    decided, differ = disagreements(pairs)
    assert differ == []
    assert decided == len(pairs) and len(accepted) == 8  # 10,\\!080 and 10080, \\frac14 and \\frac{1}{4}, ...


@pytest.mark.slow
def test_every_rewrite_and_mutant_of_every_fifth_gold(golds):
    pairs = []
    for gold in golds[::5]:
        for name, rewrite in REWRITES.items():
            answer = rewrite(gold)
            if answer is not None and answer != gold:
                pairs += [(name, gold, answer), (name, answer, gold)]
    decided, differ = disagreements(pairs)
    assert differ == []
    assert decided >= 1000  # the fast path does decide most of them; the rest went to math-verify


@pytest.mark.slow
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compositions_of_rewrites_property(golds, data):
    gold = data.draw(st.sampled_from(golds), label="gold")
    answer = gold
    for name in data.draw(st.lists(st.sampled_from(sorted(REWRITES)), min_size=1, max_size=3), label="rewrites"):
        answer = REWRITES[name](answer) or answer
    for g, a in ((gold, answer), (answer, gold)):
        fast = fast_equivalence(g, a)
        if fast is not None:
            assert fast.equal == math_verify_equal(g, a), (g, a, fast)
