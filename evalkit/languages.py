"""How to build and run a test program in each sandboxed language, as the reference scorers do.

One recipe per language: the file the source goes in, the build steps, the run command, the limits and
the commands that report the toolchain's version. MultiPL-E and HumanEval-X share them, so a C++ program
is compiled the same way whichever benchmark it comes from. `Recipe.tests` runs a program assembled by
evalkit.harness under its trusted end-of-tests signal (how each harness changes the commands: Java and
JavaScript start from a harness entry point, Go builds the test binary with `go test -c` and runs it,
Rust builds a plain binary whose main is the harness, bash runs the harness's driver from memory).

Departures from the reference command lines that change no verdict, and why:
- JVM runs use `-XX:TieredStopAtLevel=1 -XX:+UseSerialGC`: they halve javac's and java's start-up
  on a one-CPU container and leave the program's semantics alone.
- Rust links with `-C strip=debuginfo`: an unstripped test binary is over the sandbox's 16 MiB file
  size limit, so the linker would die on every program. `-A warnings` keeps the dataset's unused
  imports from burying the compile errors in the recorded output.
Timeouts are per command and wall-clock, and more generous than the references' (3-15 s; each task records
which reference limit applies): a compile that takes 5 s alone takes many times longer on a loaded machine,
and a verdict must not depend on the load. CPU time is capped as well (the sandbox sets RLIMIT_CPU from the
timeout). `--task-option timeout=S` sets the reference's limit instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from evalkit.errors import TaskError
from evalkit.execution import toolchain_versions
from evalkit.harness import BASH_RUN, JAVA_HARNESS_CLASS, PYTHON_TESTS, TestSource
from evalkit.sandbox import Program, Sandbox

JAVATUPLES_JAR = "/usr/share/java/javatuples.jar"  # MultiPL-E's Java prompts import org.javatuples
GO_LIBRARIES = "/usr/share/gocode"  # Debian's testify (HumanEval-X's Go tests import its assert package)
GO_CACHE_SEED = "/usr/local/share/evalkit/gocache"  # made at image build time from sandbox/warm/
JVM_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")


@dataclass(frozen=True)
class Recipe:
    """Build and run one source file (`program`), or a harnessed test program (`tests`), whose build steps
    and run command may differ (`test_build`, `test_run`). `memory_mb` None leaves only the container's
    memory limit, which the JVM and Go need: they reserve far more address space than they use."""

    language: str
    filename: str
    build: tuple[tuple[str, ...], ...]
    run: tuple[str, ...]
    timeout: float
    memory_mb: int | None
    versions: tuple[tuple[str, tuple[str, ...]], ...]
    test_build: tuple[tuple[str, ...], ...] | None = None
    test_run: tuple[str, ...] | None = None

    def program(self, source: str, timeout: float | None = None) -> Program:
        """A plain program: the source in `filename`, then the build steps and the run command."""
        return Program({self.filename: source}, (*self.build, self.run), timeout or self.timeout, self.memory_mb)

    def tests(self, source: TestSource, timeout: float | None = None) -> Program:
        """A test program under its harness: passing needs the harness's end-of-tests signal."""
        build = self.build if self.test_build is None else self.test_build
        return Program(dict(source.files), (*build, self.test_run or self.run), timeout or self.timeout,
                       self.memory_mb, end_signal=True)

    def describe(self) -> dict:
        build = self.build if self.test_build is None else self.test_build
        return {
            "commands": [" ".join(c) for c in (*build, self.test_run or self.run)],
            "timeout_s_per_command": self.timeout,
            "memory_mb": self.memory_mb,
            "end_of_tests_signal": "required (evalkit.harness)",
        }


def python() -> Recipe:
    """`python3` (the sandbox runs it in a fork of its own interpreter: same semantics, no start-up cost); tests
    run in the sandbox runner's own Python harness."""
    return Recipe("python", "main.py", (), ("python3", "main.py"), 10.0, 1024, (("python", ("python3", "--version")),),
                  test_run=(PYTHON_TESTS, "tests.json"))


def cpp(link: tuple[str, ...] = ()) -> Recipe:
    """`g++ -std=c++17`, then the binary (MultiPL-E's eval_cpp; HumanEval-X links -lcrypto for its md5 task)."""
    return Recipe("cpp", "main.cpp", (("g++", "-std=c++17", "-o", "main", "main.cpp", *link),), ("./main",),
                  60.0, 2048, (("g++", ("g++", "--version")),))


def java(main_class: str, classpath: tuple[str, ...] = (), assertions: bool = True) -> Recipe:
    """`javac` then `java` (`-ea` where the reference enables assertions: MultiPL-E does, HumanEval-X does not);
    `main_class` names the file (Java wants public classes in their own file)."""
    cp = ":".join((".", *classpath))
    javac = ("javac", *(f"-J{f}" for f in JVM_FLAGS), "-encoding", "UTF8", "-cp", cp)
    java_cmd = ("java", *JVM_FLAGS, *(("-ea",) if assertions else ()), "-cp", cp)
    return Recipe(
        "java", f"{main_class}.java", ((*javac, f"{main_class}.java"),), (*java_cmd, main_class), 60.0, None,
        (("javac", ("javac", "-version")), ("java", ("java", "-version"))),
        test_build=((*javac, f"{main_class}.java", f"{JAVA_HARNESS_CLASS}.java"),),
        test_run=(*java_cmd, JAVA_HARNESS_CLASS),
    )


def javascript() -> Recipe:
    return Recipe("javascript", "main.js", (), ("node", "main.js"), 20.0, None, (("node", ("node", "--version")),),
                  test_run=("node", "evalkit_tests.js"))


def bash() -> Recipe:
    return Recipe("bash", "main.sh", (), ("bash", "main.sh"), 20.0, 1024, (("bash", ("bash", "--version")),),
                  test_run=BASH_RUN)


def go() -> Recipe:
    """`go test` in GOPATH mode (the sandbox sets GO111MODULE=off) with Debian's testify on the GOPATH.

    The image ships a build cache warmed with the std and testify packages the tests import (vet facts
    included: `go test` vets, as the reference does). Each program gets its own copy of it, so nothing one
    program compiles can reach the next, and `go test` takes ~1 s instead of ~9 s. A harnessed program is
    built with `go test -c` (which vets too) and its binary run with `-test.paniconexit0`, as `go test` runs it.
    """
    env = ("env", "GOCACHE=/tmp/gocache", f"GOPATH=/tmp/.cache/gopath:{GO_LIBRARIES}")
    seed = ("cp", "-r", GO_CACHE_SEED, "/tmp/gocache")
    return Recipe("go", "main_test.go", (seed,), (*env, "go", "test", "main_test.go"), 60.0, None,
                  (("go", ("go", "version")),),
                  test_build=(seed, (*env, "go", "test", "-c", "-o", "main.test", "main_test.go")),
                  test_run=("./main.test", "-test.paniconexit0"))


def rust() -> Recipe:
    """`rustc --test` (edition 2021, as HumanEval-X's Cargo.toml), then the test binary. A harnessed program is
    a plain binary whose main (the harness) runs the test functions, each in a thread as libtest does."""
    flags = ("--edition", "2021", "-C", "strip=debuginfo", "-A", "warnings")
    return Recipe("rust", "main.rs", (("rustc", "--test", *flags, "-o", "main_test", "main.rs"),), ("./main_test",),
                  60.0, None, (("rustc", ("rustc", "--version")),),
                  test_build=(("rustc", *flags, "-o", "main", "main.rs"),), test_run=("./main",))


def library_versions(*packages: str) -> tuple[str, tuple[str, ...]]:
    """A version probe for Debian packages the reference setups put beside a toolchain."""
    return ("libraries", ("dpkg-query", "-W", "-f=${Package} ${Version}; ", *packages))


def toolchain_environment(sandbox: Sandbox | None, recipe: Recipe,
                          extra: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> dict[str, str]:
    """The toolchain versions for results.json; a toolchain missing from the sandbox refuses the task."""
    versions = toolchain_versions(sandbox, dict(recipe.versions + extra))
    missing = {k: v for k, v in versions.items() if v.startswith("unavailable")}
    if missing:
        raise TaskError(
            f"the sandbox cannot run {recipe.language}: {', '.join(f'{k}: {v}' for k, v in missing.items())}. "
            "`evalkit sandbox check` shows which toolchains work; `evalkit sandbox build --force` rebuilds the image "
            "from sandbox/packages.txt."
        )
    return versions
