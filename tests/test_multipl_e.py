# ruff: noqa: E501 - the solution table below reads best one completion per line
"""MultiPL-E tasks: data, program assembly, hand-written solutions (MultiPL-E ships none) that pass in the
sandbox while mutated ones fail, and verdicts equal to MultiPL-E's own run commands on the host."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from evalkit import languages
from evalkit.data import DataConfig
from evalkit.tasks import get_task

LANGS = ("cpp", "java", "js", "sh")
COUNTS = {"cpp": 161, "java": 158, "js": 161, "sh": 158}

# name -> language -> (correct completion, mutated completion). Completions stop where the model's would:
# C++/Bash before "\n}", Java before "\n    }\n", JavaScript after the function's closing brace.
SOLUTIONS: dict[str, dict[str, tuple[str, str]]] = {
    "HumanEval_23_strlen": {
        "cpp": ("    return string.size();", "    return string.size() + 1;"),
        "java": ("        return string.length();", "        return string.length() - 1;"),
        "js": ("  return string.length;\n}\n", "  return string.length + 1;\n}\n"),
        "sh": ("    echo ${#1}", "    echo $(( ${#1} + 1 ))"),
    },
    "HumanEval_63_fibfib": {
        "cpp": ("    long a = 0, b = 0, c = 1;\n    if (n < 2) return 0;\n    for (long i = 2; i < n; i++) "
                "{ long d = a + b + c; a = b; b = c; c = d; }\n    return c;",
                "    long a = 0, b = 0, c = 1;\n    if (n < 2) return 0;\n    for (long i = 2; i < n; i++) "
                "{ long d = a + b; a = b; b = c; c = d; }\n    return c;"),
        "java": ("        long a = 0, b = 0, c = 1;\n        if (n < 2) return 0;\n        for (long i = 2; i < n; i++) "
                 "{ long d = a + b + c; a = b; b = c; c = d; }\n        return c;",
                 "        long a = 0, b = 0, c = 1;\n        if (n < 2) return 0;\n        for (long i = 1; i < n; i++) "
                 "{ long d = a + b + c; a = b; b = c; c = d; }\n        return c;"),
        "js": ("  let [a, b, c] = [0, 0, 1];\n  if (n < 2) return 0;\n  for (let i = 2; i < n; i++) [a, b, c] = [b, c, a + b + c];"
               "\n  return c;\n}\n",
               "  let [a, b, c] = [0, 0, 1];\n  if (n < 2) return 0;\n  for (let i = 2; i < n; i++) [a, b, c] = [b, c, a + c];"
               "\n  return c;\n}\n"),
        "sh": ("    local a=0 b=0 c=1 d i\n    if (( $1 < 2 )); then echo 0; return; fi\n"
               "    for (( i = 2; i < $1; i++ )); do d=$((a + b + c)); a=$b; b=$c; c=$d; done\n    echo $c",
               "    local a=0 b=0 c=1 d i\n    if (( $1 < 2 )); then echo 0; return; fi\n"
               "    for (( i = 2; i < $1; i++ )); do d=$((b + c)); a=$b; b=$c; c=$d; done\n    echo $c"),
    },
    "HumanEval_13_greatest_common_divisor": {
        "cpp": ("    while (b) { long t = a % b; a = b; b = t; }\n    return a;",
                "    while (b) { long t = a % b; a = b; b = t; }\n    return b;"),
        "java": ("        while (b != 0) { long t = a % b; a = b; b = t; }\n        return a;",
                 "        return Math.min(a, b);"),
        "js": ("  while (b) [a, b] = [b, a % b];\n  return a;\n}\n", "  return Math.min(a, b);\n}\n"),
        "sh": ("    local a=$1 b=$2 t\n    while (( b )); do t=$((a % b)); a=$b; b=$t; done\n    echo $a",
               "    echo $(( $1 < $2 ? $1 : $2 ))"),
    },
    "HumanEval_48_is_palindrome": {
        "cpp": ("    return std::string(text.rbegin(), text.rend()) == text;", "    return !text.empty();"),
        "java": ("        return new StringBuilder(text).reverse().toString().equals(text);",
                 "        return text.length() % 2 == 1;"),
        "js": ("  return text.split('').reverse().join('') === text;\n}\n", "  return text.length > 0;\n}\n"),
        "sh": ('    local r\n    r=$(echo -n "$1" | rev)\n    [[ "$r" == "$1" ]] && echo true || echo false',
               '    [[ -n "$1" ]] && echo true || echo false'),
    },
    "HumanEval_55_fib": {
        "cpp": ("    long a = 0, b = 1;\n    for (long i = 0; i < n; i++) { long t = a + b; a = b; b = t; }\n    return a;",
                "    long a = 0, b = 1;\n    for (long i = 0; i < n; i++) { long t = a + b; a = b; b = t; }\n    return b;"),
        "java": ("        long a = 0, b = 1;\n        for (long i = 0; i < n; i++) { long t = a + b; a = b; b = t; }\n"
                 "        return a;", "        return n;"),
        "js": ("  let [a, b] = [0, 1];\n  for (let i = 0; i < n; i++) [a, b] = [b, a + b];\n  return a;\n}\n",
               "  let [a, b] = [0, 1];\n  for (let i = 1; i < n; i++) [a, b] = [b, a + b];\n  return a;\n}\n"),
        "sh": ("    local a=0 b=1 t i\n    for (( i = 0; i < $1; i++ )); do t=$((a + b)); a=$b; b=$t; done\n    echo $a",
               "    local a=0 b=1 t i\n    for (( i = 0; i < $1; i++ )); do t=$((a + b)); a=$b; b=$t; done\n    echo $b"),
    },
    "HumanEval_60_sum_to_n": {
        "cpp": ("    return n * (n + 1) / 2;", "    return n * (n - 1) / 2;"),
        "java": ("        return n * (n + 1) / 2;", "        return n * n / 2;"),
        "js": ("  return n * (n + 1) / 2;\n}\n", "  return n * (n + 1);\n}\n"),
        "sh": ("    echo $(( $1 * ($1 + 1) / 2 ))", "    echo $(( $1 * $1 ))"),
    },
    "HumanEval_53_add": {
        "cpp": ("    return x + y;", "    return x - y;"),
        "java": ("        return x + y;", "        return x * y;"),
        "js": ("  return x + y;\n}\n", "  return x - y;\n}\n"),
        "sh": ("    echo $(( $1 + $2 ))", "    echo $(( $1 - $2 ))"),
    },
    "HumanEval_35_max_element": {
        "cpp": ("    return *std::max_element(l.begin(), l.end());", "    return l.back();"),
        "java": ("        return Collections.max(l);", "        return Collections.min(l);"),
        "js": ("  return Math.max(...l);\n}\n", "  return l[l.length - 1];\n}\n"),
        "sh": ("    local m x\n    for x in $1; do if [[ -z $m ]] || (( x > m )); then m=$x; fi; done\n    echo $m",
               "    local x\n    for x in $1; do :; done\n    echo $x"),
    },
    "HumanEval_52_below_threshold": {
        "cpp": ("    for (long x : l) if (x >= t) return false;\n    return true;",
                "    for (long x : l) if (x > t) return false;\n    return true;"),
        "java": ("        for (long x : l) if (x >= t) return false;\n        return true;",
                 "        for (long x : l) if (x > t) return false;\n        return true;"),
        "js": ("  return l.every(x => x < t);\n}\n", "  return l.every(x => x <= t);\n}\n"),
        "sh": ("    local x\n    for x in $1; do if (( x >= $2 )); then echo false; return; fi; done\n    echo true",
               "    local x\n    for x in $1; do if (( x > $2 )); then echo false; return; fi; done\n    echo true"),
    },
    "HumanEval_27_flip_case": {
        "cpp": ("    for (char &c : string) c = isupper(c) ? tolower(c) : toupper(c);\n    return string;",
                "    for (char &c : string) c = toupper(c);\n    return string;"),
        "java": ("        StringBuilder b = new StringBuilder();\n        for (char c : string.toCharArray()) "
                 "b.append(Character.isUpperCase(c) ? Character.toLowerCase(c) : Character.toUpperCase(c));\n"
                 "        return b.toString();", "        return string.toUpperCase();"),
        "js": ("  return [...string].map(c => c === c.toUpperCase() ? c.toLowerCase() : c.toUpperCase()).join('');\n}\n",
               "  return string.toUpperCase();\n}\n"),
        "sh": ('    echo "$1" | tr \'a-zA-Z\' \'A-Za-z\'', '    echo "$1" | tr \'a-z\' \'A-Z\''),
    },
}


@pytest.fixture(scope="module")
def tasks(data_dir):
    return {lang: get_task(f"multipl-e-{lang}", DataConfig(mirror=data_dir)) for lang in LANGS}


@pytest.fixture(scope="module")
def docs(tasks):
    return {lang: {d["task_id"]: d for d in task.docs()} for lang, task in tasks.items()}


@pytest.mark.parametrize("lang", LANGS)
def test_docs_use_multipl_e_names_and_stop_tokens(docs, tasks, lang):
    assert len(docs[lang]) == COUNTS[lang]
    doc = docs[lang]["HumanEval_23_strlen"]
    assert doc["task_id"] == doc["name"] == "HumanEval_23_strlen"
    req = tasks[lang].request(doc)
    assert req.prompt == doc["prompt"] and req.stop == tuple(doc["stop_tokens"])
    assert req.reference is None  # MultiPL-E has no canonical solutions


def test_program_is_prompt_completion_tests_cut_at_stop(tasks, docs):
    doc = docs["cpp"]["HumanEval_53_add"]
    text = tasks["cpp"].reference_program(doc, "    return x + y;\n}\n\nint main() { return 1; }\n")
    assert text == doc["prompt"] + "    return x + y;" + "\n" + doc["tests"]


# Unusual shapes of answers to HumanEval_53_add: lang -> [(label, completion, tag)]. A tag names the task's
# DELIBERATE_DIFFERENCES entry that makes evalkit's verdict differ from MultiPL-E's; None: they must agree.
SHAPES: dict[str, list[tuple[str, str, str | None]]] = {
    "cpp": [
        ("lambda helper", "    auto same = [](long v) { return v; };\n    return same(x) + y;", None),
        ("prints", "    std::cout << \"debug\" << std::endl;\n    return x + y;", None),
        ("global after", "    return x + y;\n  }\nstatic long unused_global = 0;\nlong extra() {\n    return unused_global;",
         None),
        ("exits inside", "    exit(0);", "end-of-tests-signal"),
        ("macro over assert", "    return x - y;\n  }\n#define assert(x) ((void)0)\nlong extra() {\n    return 0;",
         "tests-out-of-reach"),
    ],
    "java": [
        ("prints", "        System.out.println(\"debug\");\n        return x + y;", None),
        ("helper after", "        return same(x) + y;\n    }\n    static long same(long v) {\n        return v;", None),
        ("exits inside", "        System.exit(0);\n        return 0;", "end-of-tests-signal"),
    ],
    "js": [
        ("logs", "  console.log('debug', x, y);\n  return x + y;\n}\n", None),
        ("exports", "  return x + y;\n}\nmodule.exports = add;\n", None),
        ("throws", "  throw new Error('not yet');\n}\n", None),
        ("exits at top level", "  return x - y;\n}\nprocess.exit(0);\n", "end-of-tests-signal"),
        ("shadows require", "  return x - y;\n}\n  function require() { return { deepEqual() {} }; }\n",
         "tests-out-of-reach"),
    ],
    "sh": [
        ("debug to stderr", "    echo \"debug\" >&2\n    echo $(( $1 + $2 ))", None),
        ("bc", "    echo \"$1 + $2\" | bc", None),
        ("top-level echo", "    echo $(( $1 + $2 ))\n  }\necho loaded\nextra() {\n    :", None),
        ("trap exit 0", "    echo $(( $1 - $2 ))\n  }\ntrap 'exit 0' EXIT\nextra() {\n    :", "tests-out-of-reach"),
    ],
}


@pytest.fixture(scope="module")
def sandbox_verdicts(sandbox, tasks, docs):
    """(lang, name, kind) -> Scored, all run through the pool at once (kind: correct, mutated or a shape)."""
    jobs = [(lang, name, kind, completion) for name, by_lang in SOLUTIONS.items() for lang, pair in by_lang.items()
            for kind, completion in zip(("correct", "mutated"), pair, strict=True)]
    jobs += [(lang, "HumanEval_53_add", label, completion) for lang, shapes in SHAPES.items()
             for label, completion, _ in shapes]
    with ThreadPoolExecutor(max_workers=sandbox.size) as pool:
        scored = pool.map(lambda j: tasks[j[0]].score(docs[j[0]][j[1]], j[3], sandbox), jobs)
        return {(lang, name, kind): s for (lang, name, kind, _), s in zip(jobs, scored, strict=True)}


@pytest.mark.docker
@pytest.mark.parametrize("lang", LANGS)
def test_handwritten_solutions_pass(sandbox_verdicts, lang):
    failed = {name: s.error[-300:] for (lg, name, kind), s in sandbox_verdicts.items()
              if lg == lang and kind == "correct" and not s.passed}
    assert not failed
    assert sum(lg == lang and kind == "correct" for lg, _, kind in sandbox_verdicts) >= 10


@pytest.mark.docker
@pytest.mark.parametrize("lang", LANGS)
def test_mutated_solutions_fail(sandbox_verdicts, lang):
    passed = [name for (lg, name, kind), s in sandbox_verdicts.items() if lg == lang and kind == "mutated" and s.passed]
    assert not passed


# MultiPL-E's evaluators (eval_cpp, eval_java, eval_javascript, eval_sh), as command lines: status OK iff all exit 0.
def reference_commands(lang: str, path: Path) -> list[list[str]]:
    if lang == "cpp":
        return [["g++", str(path), "-o", str(path.with_suffix("")), "-std=c++17"], [str(path.with_suffix(""))]]
    if lang == "java":
        out = path.parent / "classes"
        out.mkdir()
        jar = languages.JAVATUPLES_JAR
        return [["javac", "-encoding", "UTF8", "-cp", jar, "-d", str(out), str(path)],
                ["java", "-ea", "-cp", f"{out}:{jar}", "Problem"]]
    return [["node" if lang == "js" else "bash", str(path)]]


def reference_passes(lang: str, program: str) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("Problem.java" if lang == "java" else f"program.{lang}")
        path.write_text(program)
        for argv in reference_commands(lang, path):
            try:
                proc = subprocess.run(argv, capture_output=True, timeout=15, stdin=subprocess.DEVNULL, cwd=tmp)
            except subprocess.TimeoutExpired:
                return False
            if proc.returncode != 0:
                return False
    return True


HOST_TOOLS = {"cpp": "g++", "java": "javac", "js": "node", "sh": "bash"}
@pytest.mark.docker
@pytest.mark.parametrize("lang", LANGS)
def test_verdicts_agree_with_multipl_e_run_commands(sandbox_verdicts, tasks, docs, lang):
    """Every replayed sample, on MultiPL-E's own command lines on this host: equal verdicts, or a listed
    deliberate difference."""
    from agreement import Sample, assert_agreement

    from tasks.multipl_e import DELIBERATE_DIFFERENCES

    if shutil.which(HOST_TOOLS[lang]) is None:
        pytest.skip(f"{HOST_TOOLS[lang]} is not installed on this host, so MultiPL-E's command cannot run here")
    if lang == "java" and not Path(languages.JAVATUPLES_JAR).is_file():
        pytest.skip(f"MultiPL-E's Java command needs {languages.JAVATUPLES_JAR} (Debian: libjavatuples-java)")
    jobs = [(name, kind, completion, None) for name in SOLUTIONS
            for kind, completion in zip(("correct", "mutated"), SOLUTIONS[name][lang], strict=True)]
    jobs += [("HumanEval_53_add", label, completion, tag) for label, completion, tag in SHAPES[lang]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        theirs = list(pool.map(lambda j: reference_passes(lang, tasks[lang].reference_program(docs[lang][j[0]], j[2])),
                               jobs))
    samples = [Sample(f"{name} {kind}", sandbox_verdicts[(lang, name, kind)].passed, reference, tag)
               for (name, kind, _, tag), reference in zip(jobs, theirs, strict=True)]
    assert_agreement(samples, DELIBERATE_DIFFERENCES, minimum=23)


@pytest.mark.docker
def test_failures_are_recorded_and_the_run_goes_on(tmp_path, data_dir):
    """A replayed run of the first six multipl-e-sh problems: syntax error, runtime error, timeout and
    fork bomb each end as a failure, and the correct answers after them still pass."""
    from evalkit.runner import RunOptions, run_evaluation

    completions = {
        "HumanEval_23_strlen": SOLUTIONS["HumanEval_23_strlen"]["sh"][0],
        "HumanEval_89_encrypt": "    if then fi",
        "HumanEval_95_check_dict_case": "    exit 3",
        "HumanEval_85_add": "    while true; do :; done",
        "HumanEval_140_fix_spaces": "    bomb() { bomb | bomb & }; bomb",
        "HumanEval_63_fibfib": SOLUTIONS["HumanEval_63_fibfib"]["sh"][0],
    }
    replay = tmp_path / "replay.jsonl"
    replay.write_text("".join(json.dumps({"task_id": n, "completion": c}) + "\n" for n, c in completions.items()))
    opts = RunOptions(model=f"replay:{replay}", tasks=["multipl-e-sh"], limit=6, output_dir=tmp_path / "runs",
                      data=DataConfig(mirror=data_dir), sandbox_workers=2,
                      task_options={"timeout": 4.0})  # keeps the timeout case short
    path, results = run_evaluation(opts, progress=False, log=lambda _m: None)
    verdicts = {r["task_id"]: r["verdict"] for r in map(json.loads, (path / "samples.jsonl").open())}
    assert verdicts["HumanEval_23_strlen"] == verdicts["HumanEval_63_fibfib"] == "passed"
    assert verdicts["HumanEval_89_encrypt"] == verdicts["HumanEval_95_check_dict_case"] == "failed"
    assert verdicts["HumanEval_85_add"] == "timeout"
    assert verdicts["HumanEval_140_fix_spaces"] in ("failed", "timeout")
    assert results["tasks"]["multipl-e-sh"]["metrics"]["pass@1"] == pytest.approx(2 / 6)
    assert results["config"]["tasks"]["multipl-e-sh"]["environment"]["bash"].startswith("GNU bash")


def test_loads_from_the_hub_without_a_mirror(monkeypatch, docs):
    calls = []

    def fake_hub_rows(repo, split, config=None, revision=None):
        calls.append((repo, split, config))
        return [{k: v for k, v in d.items() if k != "task_id"} for d in list(docs["js"].values())[:2]], {}

    monkeypatch.setattr("evalkit.data.hub_rows", fake_hub_rows)
    task = get_task("multipl-e-js", DataConfig())
    assert [d["task_id"] for d in task.docs()] == list(docs["js"])[:2]
    assert calls == [("nuprl/MultiPL-E", "test", "humaneval-js")]
