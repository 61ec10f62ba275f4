"""Answer extraction, answer equivalence (fast path and math-verify), its time limit, and majority vote."""

from __future__ import annotations

import threading
import time

import pytest

from evalkit.answer_extraction import (
    extract_math_answer,
    final_answer_phrase,
    gsm8k_exact_match_key,
    gsm8k_flexible_extract,
    gsm8k_stated_answer,
    gsm8k_strict_match,
    last_boxed,
    parse_number,
)
from evalkit.math_equivalence import (
    SymbolicChecker,
    answers_equivalent,
    default_checker,
    exact_number,
    normalize_answer,
)
from evalkit.metrics import accuracy_metrics, majority_vote

# --- extraction ---------------------------------------------------------------------------------------


def test_last_boxed_takes_the_last_balanced_box():
    text = "First $\\boxed{1}$, then $\\boxed{\\frac{a}{\\sqrt{b^{2}}}}$ is final."
    assert last_boxed(text) == "\\frac{a}{\\sqrt{b^{2}}}"


def test_last_boxed_variants_and_failures():
    assert last_boxed("so $\\boxed 5$.") == "5"
    assert last_boxed("$\\fbox{7}$") == "7"
    assert last_boxed("no box here") is None
    assert last_boxed("cut off \\boxed{\\frac{1}{2") is None  # unbalanced: generation stopped inside


def test_extraction_order_is_math_verifys():
    # Minerva's closing sentence beats a box, wherever each stands.
    minerva = "It is 12, $\\boxed{3}$.\nFinal Answer: The final answer is $\\frac{2}{3}$. I hope it is correct."
    assert extract_math_answer(minerva) == ("\\frac{2}{3}", "final_answer")
    # A box and a free "final answer is": the one that ends later.
    assert extract_math_answer("x = 3, so $\\boxed{4}$.\nThe final answer is $5$.") == ("5", "final_answer")
    assert extract_math_answer("The final answer is $5$.\nNo: $\\boxed{4}$.") == ("4", "boxed")
    assert extract_math_answer("The final answer is $\\boxed{7}$.") == ("7", "final_answer")
    # Then a math span or a number standing after a space or "=": the one that ends later.
    assert extract_math_answer("The result is $p - q$.") == ("p - q", "math_span")
    assert extract_math_answer("The result is \\frac{14}{3}") == ("\\frac{14}{3}", "math_span")
    assert extract_math_answer("We have $x^2$ and then 1,250.5 pears") == ("1,250.5", "last_number")
    assert extract_math_answer("so $\\boxed{9") == (None, "none")  # cut off inside the box
    assert extract_math_answer("I cannot solve this.") == (None, "none")


def test_final_answer_phrase_free_text():
    assert final_answer_phrase("Thus the final answer is 42.") == "42"
    assert final_answer_phrase("The final answer is: $x^2$\nMore text") == "x^2"
    assert final_answer_phrase("The final answer is positive, because x > 0.") is None  # no math after "is"
    sentence = "The final answer is $3$. I hope it is correct.\nSo the final answer is $4$."
    assert final_answer_phrase(sentence) == "3"  # Minerva's closing sentence first, as math-verify


def test_gsm8k_extractors():
    text = "She has 3 + 4 = 7 apples. The answer is 1,207.\n\nQ: next question 99"
    assert gsm8k_strict_match(text) == "1,207" and gsm8k_stated_answer(text) == "1,207"
    assert gsm8k_flexible_extract(text) == "99"
    # lm-eval's strict-match needs a character after the number; evalkit's stated answer does not.
    assert gsm8k_strict_match("The answer is 72") == "7" and gsm8k_stated_answer("The answer is 72") == "72"
    assert gsm8k_strict_match("so\n#### 72") is None and gsm8k_stated_answer("so\n#### 72") == "72"
    assert gsm8k_strict_match("The answer is $18.") is None and gsm8k_stated_answer("The answer is $18.") == "18"
    assert gsm8k_stated_answer("the answer is 5") is None  # the exemplars' capitalised phrase only
    assert gsm8k_flexible_extract("It costs $1,000.") == "$1,000."
    assert gsm8k_flexible_extract("no digits ...") == "..."  # lm-eval's flexible pattern takes it as a number
    assert gsm8k_flexible_extract("no digits at all") is None and gsm8k_flexible_extract("only 7") == "7"
    assert gsm8k_exact_match_key("$1,000.") == "1000" and gsm8k_exact_match_key("18.00") == "18.00"
    assert parse_number("$1,000.") == 1000.0 and parse_number("-3.50") == -3.5 and parse_number("abc") is None


# --- equivalence ------------------------------------------------------------------------------------------

HALF = ["\\frac12", "0.5", "\\dfrac{1}{2}", "1/2", "\\frac{1}{2}", ".5", "$\\tfrac{1}{2}$"]

EQUIVALENT = [
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\pi/2)"),
    ("[2,5)", "x \\in [2,5)"),
    ("10\\%", "10"),
    ("0.1", "10\\%"),
    ("1,000", "1000"),
    ("x=5", "5"),
    ("30^\\circ", "30"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"),
    ("x^2+2x+1", "(x+1)^2"),
    ("\\{2,4\\}", "\\{4,2\\}"),
    ("\\text{(C)}", "(C)"),
    ("\\frac{1}{3}", "0.333333"),
]

NOT_EQUIVALENT = [
    ("\\frac12", "0.51"),
    ("\\frac12", "2"),
    ("[2,5)", "(2,5]"),
    ("[2,5)", "x \\in [2,5]"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi)"),
    ("10\\%", "20"),
    ("\\frac{1}{3}", "0.33"),
    ("x^2+2x+1", "(x-1)^2"),
    ("\\text{(C)}", "(D)"),
    ("1/0", "1/1"),
]


@pytest.mark.parametrize("a", HALF)
@pytest.mark.parametrize("b", HALF)
def test_spellings_of_one_half_are_equivalent_without_sympy(a, b):
    result = answers_equivalent(a, b)
    assert result.equal and result.method in ("string", "number")


@pytest.mark.parametrize(("gold", "pred"), EQUIVALENT)
def test_equivalent_forms_pass(gold, pred):
    assert answers_equivalent(gold, pred).equal


@pytest.mark.parametrize(("gold", "pred"), NOT_EQUIVALENT)
def test_different_answers_fail(gold, pred):
    result = answers_equivalent(gold, pred)
    assert not result.equal and result.method != "timeout"


def test_normalisation_never_merges_different_numbers():
    assert normalize_answer("\\left( 3, \\frac{\\pi}{2} \\right)") == "(3, \\frac{\\pi}{2})"
    assert exact_number("1,000") == 1000 and exact_number("1,2") is None  # a tuple stays a tuple
    assert exact_number("2, 220") is None and exact_number("010,080") is None  # pairs for math-verify
    assert normalize_answer("4 2") != normalize_answer("42") and exact_number("9.") is None
    assert exact_number("10\\%") is None  # 10 or 0.1: left to math-verify
    assert exact_number("-\\frac{3}{4}") == exact_number("-0.75")


def test_pathological_expression_times_out_cleanly_and_the_checker_recovers():
    checker = SymbolicChecker(timeout_s=1.0)
    try:
        start = time.monotonic()
        result = checker.check("3", "9^{9^{9}}")  # sympy would compute a 370-million-digit integer
        elapsed = time.monotonic() - start
        assert (result.equal, result.method) == (False, "timeout")
        assert elapsed < 30  # worker start-up plus the 1 s limit, not minutes
        after = checker.check("\\frac{1}{2}", "0.5 + 0")
        assert (after.equal, after.method) == (True, "symbolic")
    finally:
        checker.close()


def test_symbolic_check_works_off_the_main_thread():
    # math-verify's own SIGALRM timeouts refuse to run outside the main thread; the worker does not care.
    results = []
    thread = threading.Thread(target=lambda: results.append(default_checker().check("(y+1)^2", "y^2+2y+1")))
    thread.start()
    thread.join(120)
    assert results and results[0].equal and results[0].method == "symbolic"


# --- majority vote --------------------------------------------------------------------------------------------


def _same(a: str, b: str) -> bool:
    return answers_equivalent(a, b).equal


def test_majority_vote_counts_equivalence_classes_not_strings():
    answers = ["3", "\\frac12", "3", "0.5", "1/2", None]
    # As raw strings "3" wins (2 votes); as values one half wins (3 votes).
    assert majority_vote(answers, _same) == 1
    assert majority_vote(["4", "5", "5.0", "4"], _same) == 0  # tie: the class seen first wins
    assert majority_vote([None, None], _same) is None


def test_accuracy_metrics_mean_over_samples_and_majority():
    def rec(tid, i, answer, passed):
        return {"task_id": tid, "sample_index": i, "answer": answer, "verdict": "passed" if passed else "failed"}

    records = [
        rec("p1", 0, "1/2", True), rec("p1", 1, "0.5", True), rec("p1", 2, "3", False),  # maj right, 2/3
        rec("p2", 0, "7", False), rec("p2", 1, "7", False), rec("p2", 2, "8", True),  # maj wrong, 1/3
        rec("p3", 0, None, False), rec("p3", 1, "2", True), rec("p3", 2, None, False),  # maj right, 1/3
    ]
    out = accuracy_metrics(records, 3, "accuracy", lambda r: r["verdict"] == "passed", lambda r: r["answer"], _same)
    assert out["metrics"]["accuracy"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 3)
    assert out["metrics"]["maj@3"] == pytest.approx(2 / 3)
    assert out["stderr"]["maj@3"] == pytest.approx((1 / 3) ** 0.5 / 3**0.5)  # std([1,0,1], ddof=1)/sqrt(3)
    assert "closed form" in out["stderr_method"]["maj@3"]
