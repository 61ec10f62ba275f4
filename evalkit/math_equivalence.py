"""Whether two math answers are the same: a string/number fast path, then math-verify with a time limit.

The symbolic check runs in a long-lived worker process. A check that exceeds its time limit kills the
worker (a fresh one starts on the next check), so a pathological expression such as `9^{9^{9}}`
costs one timeout verdict instead of hanging the run. Unlike a SIGALRM timeout this works from any
thread and also interrupts work stuck inside C code (big-integer arithmetic).
"""

from __future__ import annotations

import atexit
import json
import logging
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

DEFAULT_TIMEOUT_S = 5.0
WORKER_START_LIMIT_S = 120.0  # importing sympy on a loaded 2-core machine can be slow

# The fast path merges only spellings that math-verify also merges; tests/test_math_fast_path.py checks every
# rule against math-verify on the MATH-500 answers and their rewrites. Everything else goes to math-verify.
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?=[()\[\]|]|\\[{}|])")  # only before a delimiter
_THOUSANDS_GLUE = "\\!"  # 10,\!080: the negative thin space MATH writes after a thousands comma
_SPACE_RE = re.compile(r"\s+")
_SHORT_FRAC_RE = re.compile(r"\\frac(\d)(\d)")
_SHORT_SQRT_RE = re.compile(r"\\sqrt(\d)")
# `x = 5`: math-verify compares 5 with the other side when that side is no equation. It reads `e` as Euler's
# number and `I` as the imaginary unit, so `e = 5` is a (false) statement there, not an assignment.
_ASSIGNMENT_RE = re.compile(r"^([a-zA-Z])=([^=,]*)$")  # x=58,500 is a pair for math-verify
_NOT_VARIABLES = frozenset("eI")
_THOUSANDS_RE = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")  # 1,000 but not 010,080 (math-verify: no)
_PLAIN_NUMBER_RE = re.compile(r"^(-?)(\d+(?:\.\d+)?|\.\d+)(?:/(\d+))?$")  # `9.` is not 9 for math-verify
_LATEX_FRAC_RE = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(\d+)\}$")


@dataclass(frozen=True)
class Equivalence:
    """The outcome of one check. `method`: "string", "number", "symbolic", "timeout" or "error"."""

    equal: bool
    method: str


def normalize_answer(answer: str) -> str:
    """A canonical spelling that merges only spellings math-verify also takes as equal.

    Outer `$` and whitespace go, `\\left`/`\\right` before a delimiter, `\\dfrac`/`\\tfrac`, the `\\frac12`
    and `\\sqrt2` short forms, a leading `.5`, and whitespace unless it separates two word characters
    (`4 2` is no number for math-verify, `x + 1` is `x+1`). Text, units, degrees, percentages, a closing
    period and `v =` prefixes are left to math-verify, which reads some of them and not others.
    """
    s = answer.strip()
    while len(s) > 1 and s.startswith("$") and s.endswith("$"):
        s = s[1:-1].strip()
    s = _LEFT_RIGHT_RE.sub("", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SPACE_RE.sub(lambda m: " " if _meaningful_space(m.string, m.start(), m.end()) else "", s)
    s = _SHORT_FRAC_RE.sub(r"\\frac{\1}{\2}", s)
    s = _SHORT_SQRT_RE.sub(r"\\sqrt{\1}", s)
    if s.startswith("."):
        s = "0" + s
    return s


def _meaningful_space(text: str, start: int, end: int) -> bool:
    """Whitespace is layout unless it separates two word characters or points (`4 2` and `4 . 5` are no numbers
    for math-verify), ends a `\\ ` command, or follows a comma (`2, 220` is a pair there, `2,220` a number)."""
    before, after = text[start - 1 : start], text[end : end + 1]
    return before in (",", "\\") or (_is_word_or_point(before) and _is_word_or_point(after))


def _is_word_or_point(char: str) -> bool:
    return char.isalnum() or char in "_."


def exact_number(answer: str) -> Fraction | None:
    """The exact value of a plain number (`-3`, `0.5`, `1/2`, `\\frac{1}{2}`, `10,\\!080`), else None.

    Percentages are not numbers here: `10\\%` may be meant as 10 or as 0.1, so math-verify decides.
    """
    return _number(normalize_answer(answer))


def _number(normalized: str) -> Fraction | None:
    if "%" in normalized:
        return None
    s = normalized.replace(_THOUSANDS_GLUE, "")
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    if m := _PLAIN_NUMBER_RE.match(s):
        sign, value, denominator = m.groups()
        if denominator is not None and int(denominator) == 0:
            return None
        number = Fraction(value) / (int(denominator) if denominator else 1)
        return -number if sign else number
    if (m := _LATEX_FRAC_RE.match(s)) and int(m.group(3)) != 0:
        number = Fraction(int(m.group(2)), int(m.group(3)))
        return -number if m.group(1) else number
    return None


def _assigned_value(normalized: str) -> str:
    """`x=5` -> `5` (what math-verify compares when the other answer is no equation); anything else unchanged."""
    m = _ASSIGNMENT_RE.match(normalized)
    return m.group(2) if m and m.group(1) not in _NOT_VARIABLES else normalized


def _numbers_differ(a: Fraction, b: Fraction) -> bool:
    # math-verify rounds floats to 6 decimals; leave near-misses (0.333333 vs 1/3) to it.
    return abs(a - b) > Fraction(1, 10**6) * max(1, abs(a), abs(b))


class SymbolicChecker:
    """math-verify in a worker process, one check at a time, each under a wall-clock limit."""

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.cache: dict[tuple[str, str], Equivalence] = {}

    def _start(self) -> subprocess.Popen:
        package_root = str(Path(__file__).resolve().parents[1])
        bootstrap = (f"import sys; sys.path.insert(0, {package_root!r}); "
                     "from evalkit.math_equivalence import serve; serve()")
        proc = subprocess.Popen(
            [sys.executable, "-c", bootstrap],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        if self._read_line(proc, WORKER_START_LIMIT_S) != "ready":
            self._kill(proc)
            raise RuntimeError("the math-verify worker did not start (is math-verify installed?)")
        return proc

    @staticmethod
    def _read_line(proc: subprocess.Popen, limit_s: float) -> str | None:
        ready, _, _ = select.select([proc.stdout], [], [], limit_s)
        if not ready:
            return None
        line = proc.stdout.readline()
        return line.strip() if line else None

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        proc.kill()
        proc.wait()

    def check(self, gold: str, pred: str) -> Equivalence:
        key = (gold, pred)
        if key in self.cache:
            return self.cache[key]
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            started = time.monotonic()
            try:
                self._proc.stdin.write(json.dumps({"gold": gold, "pred": pred}) + "\n")
                self._proc.stdin.flush()
                line = self._read_line(self._proc, self.timeout_s)
            except OSError:  # the worker died under us (e.g. killed for memory)
                line = None
            if line is None:  # over time, or the worker died: replace the worker
                timed_out = time.monotonic() - started >= self.timeout_s * 0.99
                self._kill(self._proc)
                self._proc = None
                result = Equivalence(False, "timeout" if timed_out else "error")
            else:
                reply = json.loads(line)
                result = Equivalence(bool(reply.get("equal")), "error" if "error" in reply else "symbolic")
        self.cache[key] = result
        return result

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._kill(self._proc)
            self._proc = None


def serve() -> None:
    """The worker loop: one JSON request per stdin line, one JSON reply per stdout line."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # its "timeout disabled" warning
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            # The caller enforces the time limit, so math-verify's own SIGALRM limits are off. Answers are read
            # as they stand in solutions and completions, `$\\boxed{...}$`: math-verify reads some differently
            # without the dollars (\\boxed{\\text{\\frac{1}{2}}} is 1/2 there, text with them).
            gold = parse(f"$\\boxed{{{request['gold']}}}$", parsing_timeout=None)
            pred = parse(f"$\\boxed{{{request['pred']}}}$", parsing_timeout=None)
            reply = {"equal": bool(verify(gold, pred, timeout_seconds=None))}
        except Exception as e:  # a parser/sympy failure is a "not judged", never a crash
            reply = {"equal": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(reply), flush=True)


_default_checker: SymbolicChecker | None = None


def default_checker() -> SymbolicChecker:
    global _default_checker
    if _default_checker is None:
        _default_checker = SymbolicChecker()
        atexit.register(_default_checker.close)
    return _default_checker


def fast_equivalence(gold: str, pred: str) -> Equivalence | None:
    """The verdict of the string and number checks, or None when only math-verify can tell."""
    gold_norm, pred_norm = normalize_answer(gold), normalize_answer(pred)
    if gold_norm == pred_norm:
        return Equivalence(True, "string")
    # As math-verify: an assignment's value counts when the other answer is no equation (x=5 and 5), and two
    # equations compare whole (x=5 and y=5 differ).
    gold_number = _number(_assigned_value(gold_norm) if "=" not in pred_norm else gold_norm)
    pred_number = _number(_assigned_value(pred_norm) if "=" not in gold_norm else pred_norm)
    if gold_number is not None and pred_number is not None:
        if gold_number == pred_number:
            return Equivalence(True, "number")
        if _numbers_differ(gold_number, pred_number):
            return Equivalence(False, "number")
    return None


def answers_equivalent(gold: str, pred: str, checker: SymbolicChecker | None = None) -> Equivalence:
    """Is `pred` the same answer as `gold`? Cheap checks first; math-verify only when they cannot tell."""
    return fast_equivalence(gold, pred) or (checker or default_checker()).check(gold, pred)
