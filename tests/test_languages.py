"""Every language recipe, in the real sandbox: a passing program passes, and a compile error, a runtime
error, a timeout and a hostile program each end as a failure without stopping the programs after them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from evalkit import languages
from evalkit.execution import scored_from_execution
from evalkit.tasks import TaskError

GO_HEADER = 'package main\n\nimport (\n    "testing"\n    "os"\n    "github.com/stretchr/testify/assert"\n)\n\n'
GO_USE_OS = "var _ = os.Getpid\nvar _ = assert.Equal\n"  # every import used, whatever the test does
RUST_TEST = "#[cfg(test)]\nmod tests {{\n    #[test]\n    fn it() {{\n        {body}\n    }}\n}}\n"

# language -> (recipe, {case: (source, timeout or None)}); "hostile" programs attack the sandbox itself
# and would pass only by subverting it.
CASES = {
    "python": (languages.python(), {
        "pass": ("assert sorted([3, 1, 2]) == [1, 2, 3]\n", None),
        "compile_error": ("def f(:\n    pass\n", None),
        "runtime_error": ("assert sorted([3, 1, 2]) == [3, 2, 1]\n", None),
        "timeout": ("while True:\n    pass\n", 3),
        "hostile": ("import os\nwhile True:\n    os.fork()\n", 5),  # fork bomb
    }),
    "cpp": (languages.cpp(), {
        "pass": ("#undef NDEBUG\n#include<cassert>\nint main(){ assert(1 + 1 == 2); }\n", None),
        "compile_error": ("int main(){ return undefined_name; }\n", None),
        "runtime_error": ("#undef NDEBUG\n#include<cassert>\nint main(){ assert(1 + 1 == 3); }\n", None),
        "timeout": ("int main(){ volatile unsigned x = 0; while (true) { x++; } }\n", 6),
        "hostile": ("#include<unistd.h>\nint main(){ while (true) fork(); }\n", 6),  # fork bomb
    }),
    "java": (languages.java("Main"), {
        "pass": ("public class Main { public static void main(String[] a) { assert 1 + 1 == 2; } }\n", None),
        "compile_error": ("public class Main { public static void main(String[] a) { int x = \"s\"; } }\n", None),
        # `assert` only throws with -ea: this also checks that the recipe enables assertions.
        "runtime_error": ("public class Main { public static void main(String[] a) { assert 1 + 1 == 3; } }\n", None),
        "timeout": ("public class Main { public static void main(String[] a) { while (true) {} } }\n", 8),
        "hostile": ("import java.util.*;\npublic class Main { public static void main(String[] a) {\n"
                    "  List<long[]> hog = new ArrayList<>(); while (true) hog.add(new long[1 << 24]); } }\n", 20),
    }),
    "javascript": (languages.javascript(), {
        "pass": ("const assert = require('node:assert');\nassert.deepEqual([1, 2], [1, 2]);\n", None),
        "compile_error": ("function broken( {\n", None),
        "runtime_error": ("const assert = require('node:assert');\nassert.deepEqual([1, 2], [2, 1]);\n", None),
        "timeout": ("while (true) {}\n", 4),
        "hostile": ("const cp = require('child_process');\nwhile (true) { cp.spawn('node', ['-e', 'while(1){}']); }\n",
                    6),
    }),
    "bash": (languages.bash(), {
        "pass": ("set -e\n[[ $((1 + 1)) = 2 ]]\n", None),
        "compile_error": ("if then fi\n", None),
        "runtime_error": ("set -e\n[[ $((1 + 1)) = 3 ]]\n", None),
        "timeout": ("while true; do :; done\n", 4),
        # a fork bomb, then an attempt to forge the worker's "ok" answer on its stdout, then a failing test
        "hostile": ("bomb() { bomb | bomb & }\nbomb\necho '{\"id\": null, \"status\": \"ok\"}' > /proc/1/fd/1\n"
                    "wait\nexit 1\n", 6),
    }),
    "go": (languages.go(), {
        "pass": (GO_HEADER + GO_USE_OS + "func TestIt(t *testing.T) {\n    assert.Equal(t, 2, 1+1)\n}\n", None),
        "compile_error": (GO_HEADER + GO_USE_OS + "func TestIt(t *testing.T) {\n    var x int = \"s\"\n}\n", None),
        "runtime_error": (GO_HEADER + GO_USE_OS + "func TestIt(t *testing.T) {\n    assert.Equal(t, 3, 1+1)\n}\n",
                          None),
        "timeout": (GO_HEADER + GO_USE_OS + "func TestIt(t *testing.T) {\n    for {\n    }\n}\n", 30),
        # kill every process it may signal (`go test` itself among them), then spin
        "hostile": ('package main\n\nimport (\n    "syscall"\n    "testing"\n)\n\n'
                    "func TestIt(t *testing.T) {\n    syscall.Kill(-1, syscall.SIGKILL)\n    for {\n    }\n}\n", 40),
    }),
    "rust": (languages.rust(), {
        "pass": (RUST_TEST.format(body="assert_eq!(1 + 1, 2);"), None),
        "compile_error": (RUST_TEST.format(body="let x: i32 = \"s\";"), None),
        "runtime_error": (RUST_TEST.format(body="assert_eq!(1 + 1, 3);"), None),
        "timeout": (RUST_TEST.format(body="loop {}"), 8),
        "hostile": (RUST_TEST.format(body="loop { let _ = std::process::Command::new(\"/proc/self/exe\").spawn(); }"),
                    8),
    }),
}


@pytest.fixture(scope="module")
def verdicts(sandbox) -> dict[tuple[str, str], object]:
    """Run every case at once (the pool works in parallel); the passing programs go last, after the hostile ones."""
    jobs = [(lang, case, recipe.program(src, timeout)) for lang, (recipe, cases) in CASES.items()
            for case, (src, timeout) in cases.items() if case != "pass"]
    jobs += [(lang, "pass", recipe.program(cases["pass"][0])) for lang, (recipe, cases) in CASES.items()]
    with ThreadPoolExecutor(max_workers=sandbox.size) as pool:
        executions = list(pool.map(lambda job: sandbox.run(job[2]), jobs))
    return {(lang, case): scored_from_execution(ex, "") for (lang, case, _), ex in zip(jobs, executions, strict=True)}


LANGS = list(CASES)


@pytest.mark.docker
@pytest.mark.parametrize("lang", LANGS)
def test_correct_program_passes(verdicts, lang):
    assert verdicts[(lang, "pass")].verdict == "passed", verdicts[(lang, "pass")].error


@pytest.mark.docker
@pytest.mark.parametrize("lang", LANGS)
def test_compile_error_fails(verdicts, lang):
    scored = verdicts[(lang, "compile_error")]
    assert scored.verdict == "failed"
    if lang in ("cpp", "java", "rust"):  # languages with a separate build step say so
        assert scored.error.startswith("build failed")


@pytest.mark.docker
@pytest.mark.parametrize("lang", LANGS)
def test_runtime_error_fails(verdicts, lang):
    scored = verdicts[(lang, "runtime_error")]
    assert scored.verdict == "failed"
    assert not scored.error.startswith("build failed")


@pytest.mark.docker
@pytest.mark.parametrize("lang", LANGS)
def test_timeout_is_recorded(verdicts, lang):
    assert verdicts[(lang, "timeout")].verdict == "timeout"


@pytest.mark.docker
@pytest.mark.parametrize("lang", LANGS)
def test_hostile_program_fails_and_the_pool_goes_on(verdicts, lang):
    assert verdicts[(lang, "hostile")].verdict in ("failed", "timeout")
    assert verdicts[(lang, "pass")].passed  # ran after every hostile program


def test_recipes_name_the_reference_commands():
    assert languages.python().run == ("python3", "main.py")
    assert languages.cpp().build[0][:2] == ("g++", "-std=c++17")
    java = languages.java("Problem", (languages.JAVATUPLES_JAR,))
    assert java.build[0][0] == "javac" and java.filename == "Problem.java"
    assert java.run[0] == "java" and "-ea" in java.run and java.run[-1] == "Problem"
    assert languages.javascript().run == ("node", "main.js")
    assert languages.bash().run == ("bash", "main.sh")
    assert languages.go().run[-3:] == ("go", "test", "main_test.go")
    assert languages.rust().build[0][:2] == ("rustc", "--test")
    # the JVM and Go reserve more address space than any per-process cap allows
    assert languages.java("Main").memory_mb is None and languages.go().memory_mb is None


class _NoGoSandbox:
    """A sandbox whose image lacks Go: every `go` command fails to start."""

    size = 1

    def run(self, program):
        from evalkit.sandbox import Execution

        if program.commands[0][0] == "go":
            return Execution(status="failed", detail="cannot start 'go': No such file or directory")
        return Execution(status="ok", exit_code=0, stdout="version 1\n")


def test_missing_toolchain_refuses_the_task():
    with pytest.raises(TaskError, match="cannot run go.*evalkit sandbox check"):
        languages.toolchain_environment(_NoGoSandbox(), languages.go())
    assert languages.toolchain_environment(_NoGoSandbox(), languages.rust()) == {"rustc": "version 1"}
