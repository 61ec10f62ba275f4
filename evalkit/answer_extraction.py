"""Pulling the final answer out of a model's free-form solution text.

Math answers are taken in a fixed order of preference: the last balanced `\\boxed{...}`, then the text
after "final answer is", then the last number. GSM8K has lm-eval's two extractors (strict-match and
flexible-extract, with lm-eval's exact_match comparison) because its published numbers report both, and a
lenient one of its own.
"""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox", "\\framebox")

# A number as models write it: optional sign, thousands commas, decimals, an optional "/denominator".
_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)

# "The final answer is $x$. I hope it is correct." (Minerva) and "the final answer is x" (free text).
_FINAL_ANSWER_RE = re.compile(r"final answer is:?\s*(.+?)(?:\s*\.?\s*I hope it is correct|\n|$)", re.IGNORECASE)

# lm-eval 0.4 gsm8k_cot (gsm8k-cot.yaml), verbatim: the filters' regexes and exact_match's regexes_to_ignore
# (with ignore_case). tests/test_gsm8k.py reads them from lm-eval's installed YAML and compares.
GSM8K_STRICT_MATCH_RE = re.compile(r"The answer is (\-?[0-9\.\,]+).")  # first match
GSM8K_FLEXIBLE_EXTRACT_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")  # last match
GSM8K_EXACT_MATCH_IGNORE = (",", "\\$", "(?s).*#### ", "\\.$")

# evalkit's lenient reading: the exemplars' "The answer is N" or the dataset's "#### N", `$` and spaces allowed.
_GSM8K_STATED_RE = re.compile(r"(?:The answer is|####)\s*\$?\s*(-?[\d,]*\.?\d+)")


def last_boxed(text: str) -> str | None:
    """Contents of the last balanced `\\boxed{...}` (or `\\fbox`, `\\framebox`, `\\boxed x`), or None."""
    start = max(text.rfind(cmd) for cmd in _BOX_COMMANDS)
    if start < 0:
        return None
    cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
    rest = text[start + len(cmd) :]
    if rest.startswith(" ") and not rest.lstrip().startswith("{"):
        # `\boxed 5`: the argument runs to the end of the math span.
        return rest.strip().split("$")[0].strip() or None
    rest = rest.lstrip()
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i].strip()
    return None  # unbalanced: the generation was cut off inside the box


def final_answer_phrase(text: str) -> str | None:
    """What follows the last "final answer is", without surrounding `$` and a closing period."""
    matches = list(_FINAL_ANSWER_RE.finditer(text))
    if not matches:
        return None
    answer = matches[-1].group(1).strip().rstrip(".").strip()
    if answer.startswith("$") and answer.endswith("$") and len(answer) > 1:
        answer = answer.strip("$").strip()
    return answer or None


def last_number(text: str) -> str | None:
    """The last number in the text (commas, decimals and simple fractions kept), or None."""
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


# The order of preference: an explicit box beats a stated final answer beats a stray number.
_MATH_EXTRACTORS = (("boxed", last_boxed), ("final_answer", final_answer_phrase), ("last_number", last_number))


def extract_math_answer(text: str) -> tuple[str | None, str]:
    """The final answer and how it was found: "boxed", "final_answer", "last_number" or "none"."""
    for method, extractor in _MATH_EXTRACTORS:
        answer = extractor(text)
        if answer:
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
