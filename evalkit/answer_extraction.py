"""Pulling the final answer out of a model's free-form solution text.

Math answers are taken in a fixed order of preference: the last balanced `\\boxed{...}`, then the text
after "final answer is", then the last number. GSM8K has its own pair of extractors (strict and
flexible) because its published numbers report both.
"""

from __future__ import annotations

import re

_BOX_COMMANDS = ("\\boxed", "\\fbox", "\\framebox")

# A number as models write it: optional sign, thousands commas, decimals, an optional "/denominator".
_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)

# "The final answer is $x$. I hope it is correct." (Minerva) and "the final answer is x" (free text).
_FINAL_ANSWER_RE = re.compile(r"final answer is:?\s*(.+?)(?:\s*\.?\s*I hope it is correct|\n|$)", re.IGNORECASE)

# GSM8K strict formats: the exemplars' "The answer is N" and the dataset's own "#### N".
_GSM8K_STRICT_RE = re.compile(r"(?:The answer is|####)\s*\$?\s*(-?[\d,]*\.?\d+)")
_GSM8K_NUMBER_RE = re.compile(r"-?(?:\$\s?)?(?:\d[\d,]*\.?\d*|\.\d+)")


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


def gsm8k_strict_answer(text: str) -> str | None:
    """The number after the first "The answer is" or "####", as the 8-shot exemplars teach."""
    match = _GSM8K_STRICT_RE.search(text)
    return match.group(1) if match else None


def gsm8k_flexible_answer(text: str) -> str | None:
    """The last number anywhere in the text."""
    numbers = [n for n in _GSM8K_NUMBER_RE.findall(text) if any(ch.isdigit() for ch in n)]
    return numbers[-1] if numbers else None


def parse_number(text: str) -> float | None:
    """A number with its dressing removed (`$`, thousands commas, a trailing period), or None."""
    cleaned = text.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        return float(cleaned)
    except ValueError:
        return None
