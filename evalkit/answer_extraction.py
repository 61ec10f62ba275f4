"""Pulling the final answer out of a model's free-form solution text.

Math answers are taken in math-verify's order of preference (the reference scorer of MATH-500): Minerva's
closing sentence "final answer is X. I hope it is correct"; then the last balanced `\\boxed{...}` or free
"final answer is X", whichever ends later; then the last math span or number, whichever ends later.
GSM8K has lm-eval's two extractors (strict-match and flexible-extract, with lm-eval's exact_match
comparison) because its published numbers report both, and a lenient one of its own.
"""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox", "\\framebox")

# A number as models write it: optional sign, thousands commas, decimals, an optional "/denominator"; as in
# math-verify, only after the start, a space or "=" (so not the 9 of a `\\boxed{9` cut off mid-answer).
_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(rf"(?:^|(?<=[\s=]))[$€£]?({_NUMBER})")

# "The final answer is $x$. I hope it is correct." (Minerva) and "the final answer is x" (free text).
_FINAL_ANSWER_RE = re.compile(r"final answer is:?\s*(.+?)(\s*\.?\s*I hope it is correct|\n|$)", re.IGNORECASE)

# As math-verify, a free "final answer is" counts only before math or a number ("... is positive, because" does not).
_FREE_ANSWER_START_RE = re.compile(r"\$|\\[(\[]|[-+]?[$€£]?\.?\d")

# Math spans, as math-verify finds plain LaTeX: $$..$$, \[..\], $..$ and \(..\) on one line, a bare \frac{a}{b}.
_MATH_SPAN_RE = re.compile(
    r"(?<!\\)\$\$(?P<display>(?:[^$]|\$(?!\$))+?)(?<!\\)\$\$"
    r"|(?<!\\)\\\[(?P<bracket>(?:[^\\]|\\(?!\]))+?)(?<!\\)\\\]"
    r"|(?<![\\\d])\$(?P<inline>(?:\\[$]|[^\n$])+?)(?<!\\)\$"
    r"|(?<!\\)\\\((?P<paren>(?:[^\\\n]|\\(?!\)))+?)(?<!\\)\\\)"
    r"|(?P<fraction>-?\\frac\{-?\d+(?:[.,]\d+)?\}\{-?\d+(?:[.,]\d+)?\})",
    re.DOTALL,
)

# lm-eval 0.4 gsm8k_cot (gsm8k-cot.yaml), verbatim: the filters' regexes and exact_match's regexes_to_ignore
# (with ignore_case). tests/test_gsm8k.py reads them from lm-eval's installed YAML and compares.
GSM8K_STRICT_MATCH_RE = re.compile(r"The answer is (\-?[0-9\.\,]+).")  # first match
GSM8K_FLEXIBLE_EXTRACT_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")  # last match
GSM8K_EXACT_MATCH_IGNORE = (",", "\\$", "(?s).*#### ", "\\.$")

# evalkit's lenient reading: the exemplars' "The answer is N" or the dataset's "#### N", `$` and spaces allowed.
_GSM8K_STATED_RE = re.compile(r"(?:The answer is|####)\s*\$?\s*(-?[\d,]*\.?\d+)")


def last_boxed(text: str) -> str | None:
    """Contents of the last balanced `\\boxed{...}` (or `\\fbox`, `\\framebox`, `\\boxed x`), or None."""
    found = _last_boxed_span(text)
    return found[0] if found else None


def _last_boxed_span(text: str) -> tuple[str, int] | None:
    """(contents, end offset) of the last balanced box."""
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    after = start + len(cmd)
    rest = text[after:]
    if rest.startswith(" ") and not rest.lstrip().startswith("{"):
        # `\boxed 5`: the argument runs to the end of the math span.
        argument = rest.strip().split("$")[0]
        return (argument.strip(), text.index(argument, after) + len(argument)) if argument.strip() else None
    opening = after + len(rest) - len(rest.lstrip())
    if not text.startswith("{", opening):
        return None
    depth = 0
    for i in range(opening, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[opening + 1 : i].strip(), i + 1
    return None  # unbalanced: the generation was cut off inside the box


def _final_answers(text: str) -> tuple[tuple[str, int] | None, tuple[str, int] | None]:
    """(the last Minerva closing sentence's answer, the last free "final answer is" answer), each with its end."""
    sentence = free = None
    for m in _FINAL_ANSWER_RE.finditer(text):
        answer = m.group(1).strip().rstrip(".").strip()
        if answer.startswith("$") and answer.endswith("$") and len(answer) > 1:
            answer = answer.strip("$").strip()
        answer = last_boxed(answer) or answer  # "The final answer is $\\boxed{5}$."
        if not answer:
            continue
        if m.group(2).strip():
            sentence = (answer, m.end())
        elif _FREE_ANSWER_START_RE.match(m.group(1)):
            free = (answer, m.end(1))
    return sentence, free


def final_answer_phrase(text: str) -> str | None:
    """The answer of the last Minerva closing sentence, else of the last free "final answer is" (before math or
    a number), without surrounding `$`, a box and a closing period."""
    sentence, free = _final_answers(text)
    found = sentence or free
    return found[0] if found else None


def last_number(text: str) -> str | None:
    """The last number after the start, a space or "=" (commas, decimals and simple fractions kept), or None."""
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


def _last_math_span(text: str) -> tuple[str, int] | None:
    spans = [(next(g for g in m.groups() if g is not None).strip(), m.end()) for m in _MATH_SPAN_RE.finditer(text)]
    spans = [span for span in spans if span[0]]
    return spans[-1] if spans else None


def _last_number_span(text: str) -> tuple[str, int] | None:
    matches = list(_NUMBER_RE.finditer(text))
    return (matches[-1].group(1), matches[-1].end()) if matches else None


def extract_math_answer(text: str) -> tuple[str | None, str]:
    """The final answer and how it was found: "final_answer", "boxed", "math_span", "last_number" or "none".

    math-verify's priorities: Minerva's closing sentence first; then a box or a free "final answer is",
    whichever ends later; then a math span or a number, whichever ends later.
    """
    sentence, free = _final_answers(text)
    if sentence:
        return sentence[0], "final_answer"
    for group in ((("boxed", _last_boxed_span(text)), ("final_answer", free)),
                  (("math_span", _last_math_span(text)), ("last_number", _last_number_span(text)))):
        found = [(end, method, answer) for method, candidate in group if candidate for answer, end in [candidate]]
        if found:
            _, method, answer = max(found, key=lambda f: f[0])
            return answer, method
    return None, "none"


def regex_filter(pattern: re.Pattern, text: str, group_select: int) -> str | None:
    """lm-eval's `regex` filter: the `group_select`-th match (its first non-empty group when the pattern has
    several), stripped; None where lm-eval returns its "[invalid]" fallback."""
    matches = pattern.findall(text)
    if not matches:
        return None
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((group for group in match if group), None)
        if match is None:
            return None
    return match.strip()


def gsm8k_strict_match(text: str) -> str | None:
    """lm-eval's strict-match: the first "The answer is N" followed by any one character."""
    return regex_filter(GSM8K_STRICT_MATCH_RE, text, 0)


def gsm8k_flexible_extract(text: str) -> str | None:
    """lm-eval's flexible-extract: the last number-like run (`$`, `.` and `,` included)."""
    return regex_filter(GSM8K_FLEXIBLE_EXTRACT_RE, text, -1)


def gsm8k_exact_match_key(text: str) -> str:
    """What lm-eval's exact_match compares: the ignored patterns removed in order, then lower case."""
    for pattern in GSM8K_EXACT_MATCH_IGNORE:
        text = re.sub(pattern, "", text)
    return text.lower()


def gsm8k_stated_answer(text: str) -> str | None:
    """The number after the first "The answer is" or "####", allowing `$` and spaces before it."""
    match = _GSM8K_STATED_RE.search(text)
    return match.group(1) if match else None


def parse_number(text: str) -> float | None:
    """A number with its dressing removed (`$`, thousands commas, a trailing period), or None."""
    cleaned = text.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        return float(cleaned)
    except ValueError:
        return None
