"""Sanitizers: keep the code a completion needs, drop what a model wrote after it.

Bounded: the Python sanitizer parses at most MAX_PARSES times and trims nothing in a text longer than
MAX_TRIM_CHARS (a 1024-token completion is ~4 KB), so a huge completion that never parses costs one parse,
not one per line (a 20,000-line one took 279 s and could not be interrupted). The bounds are counts, not a
clock: how a sample is trimmed must not depend on the machine's load.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Sequence

FENCE = re.compile(r"^\s*```")
MAX_PARSES = 32  # trims back ~32 broken lines or more (each failed parse jumps to the line before its error)
MAX_TRIM_CHARS = 64_000


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
    not going to run; trimming back to the last complete statement is what evalplus does as well. The
    longest prefix of lines that parses (after the prompt) is kept; each failed parse moves the cut to
    just before the line its error names, or one line back.
    """
    text = truncate_at_stop(completion, stop)
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if FENCE.match(line):
            lines = lines[:i]
            break
    keep = _longest_parsing_prefix(prompt, lines)
    if keep == 0:  # nothing parses: keep the text, so the error message shows what the model wrote
        return text
    return "\n".join(lines[:keep]).rstrip() + "\n"


def _longest_parsing_prefix(prompt: str, lines: list[str]) -> int:
    """How many of `lines` parse after `prompt` (0: none, or the bounds ran out)."""
    if not lines:
        return 0
    if sum(map(len, lines)) > MAX_TRIM_CHARS:
        return len(lines) if _error_line(prompt + "\n".join(lines)) is None else 0
    offset = prompt.count("\n")  # the completion's first line is line offset + 1 of the source
    keep = len(lines)
    for _ in range(MAX_PARSES):
        if keep == 0:
            return 0
        error_line = _error_line(prompt + "\n".join(lines[:keep]))
        if error_line is None:
            return keep
        keep = min(keep - 1, max(0, error_line - offset - 1))
    return 0


def _error_line(source: str) -> int | None:
    """The line of the source's first syntax error (1-based), or None when it parses."""
    with warnings.catch_warnings():  # model code is full of invalid escapes; they are not our warnings
        warnings.simplefilter("ignore")
        try:
            ast.parse(source)
        except SyntaxError as e:
            return e.lineno or 1
        except ValueError:  # null bytes
            return 1
    return None
