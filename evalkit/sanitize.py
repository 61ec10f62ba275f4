"""Sanitizers: keep the code a completion needs, drop what a model wrote after it."""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Sequence

FENCE = re.compile(r"^\s*```")


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut `text` before the earliest occurrence of any stop sequence."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def sanitize_python_completion(prompt: str, completion: str, stop: tuple[str, ...]) -> str:
    """Cut at stop sequences and markdown fences, then drop trailing lines that break the syntax.

    A model cut off by max_tokens mid-statement would otherwise fail on a SyntaxError in code it was
    not going to run; trimming back to the last complete statement is what evalplus does as well.
    """
    text = truncate_at_stop(completion, stop)
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if FENCE.match(line):
            lines = lines[:i]
            break
    while lines and not _parses(prompt + "\n".join(lines)):
        lines.pop()
    if not lines:  # nothing parses: keep the text, so the error message shows what the model wrote
        return text
    return "\n".join(lines).rstrip() + "\n"


def _parses(source: str) -> bool:
    with warnings.catch_warnings():  # model code is full of invalid escapes; they are not our warnings
        warnings.simplefilter("ignore")
        try:
            ast.parse(source)
        except (SyntaxError, ValueError):
            return False
    return True
