"""How to build and run a test program in each sandboxed language, as the reference scorers do.

One recipe per language: the file the source goes in, the build steps, the test command, the limits
and the commands that report the toolchain's version. MultiPL-E and HumanEval-X share them, so a
C++ program is compiled the same way whichever benchmark it comes from.

Departures from the reference command lines that change no verdict, and why:
- JVM runs use `-XX:TieredStopAtLevel=1 -XX:+UseSerialGC`: they halve javac's and java's start-up
  on a one-CPU container and leave the program's semantics alone.
- Rust links with `-C strip=debuginfo`: an unstripped test binary is over the sandbox's 16 MiB file
  size limit, so the linker would die on every program. `-A warnings` keeps the dataset's unused
  imports from burying the compile errors in the recorded output.
Timeouts are per command and wall-clock, and generous (the references use 3-15 s): a compile that
takes 5 s alone takes many times longer on a loaded machine, and a verdict must not depend on the load.
CPU time is capped as well (the sandbox sets RLIMIT_CPU from the timeout).
"""

from __future__ import annotations

from dataclasses import dataclass

from evalkit.errors import TaskError
from evalkit.execution import toolchain_versions
from evalkit.sandbox import Program, Sandbox

JAVATUPLES_JAR = "/usr/share/java/javatuples.jar"  # MultiPL-E's Java prompts import org.javatuples
GO_LIBRARIES = "/usr/share/gocode"  # Debian's testify (HumanEval-X's Go tests import its assert package)
GO_CACHE_SEED = "/usr/local/share/evalkit/gocache"  # made at image build time from sandbox/warm/
JVM_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")


@dataclass(frozen=True)
class Recipe:
    """Build and run one source file. `memory_mb` None leaves only the container's memory limit,
    which the JVM and Go need: they reserve far more address space than they use."""

    language: str
    filename: str
    build: tuple[tuple[str, ...], ...]
    run: tuple[str, ...]
    timeout: float
    memory_mb: int | None
    versions: tuple[tuple[str, tuple[str, ...]], ...]

    def program(self, source: str, timeout: float | None = None) -> Program:
        return Program({self.filename: source}, (*self.build, self.run), timeout or self.timeout, self.memory_mb)

    def describe(self) -> dict:
        return {
            "file": self.filename,
            "commands": [" ".join(c) for c in (*self.build, self.run)],
            "timeout_s_per_command": self.timeout,
            "memory_mb": self.memory_mb,
        }


def python() -> Recipe:
    """`python3` (the sandbox runs it in a fork of its own interpreter: same semantics, no start-up cost)."""
    return Recipe("python", "main.py", (), ("python3", "main.py"), 10.0, 1024, (("python", ("python3", "--version")),))


def cpp(link: tuple[str, ...] = ()) -> Recipe:
    """`g++ -std=c++17`, then the binary (MultiPL-E's eval_cpp; HumanEval-X links -lcrypto for its md5 task)."""
    return Recipe("cpp", "main.cpp", (("g++", "-std=c++17", "-o", "main", "main.cpp", *link),), ("./main",),
                  60.0, 2048, (("g++", ("g++", "--version")),))


def java(main_class: str, classpath: tuple[str, ...] = ()) -> Recipe:
    """`javac` then `java -ea`; `main_class` names the file (Java wants public classes in their own file)."""
    cp = ":".join((".", *classpath))
    return Recipe(
        "java", f"{main_class}.java",
        (("javac", *(f"-J{f}" for f in JVM_FLAGS), "-encoding", "UTF8", "-cp", cp, f"{main_class}.java"),),
        ("java", *JVM_FLAGS, "-ea", "-cp", cp, main_class),
        60.0, None,
        (("javac", ("javac", "-version")), ("java", ("java", "-version"))),
    )


def javascript() -> Recipe:
    return Recipe("javascript", "main.js", (), ("node", "main.js"), 20.0, None, (("node", ("node", "--version")),))


def bash() -> Recipe:
    return Recipe("bash", "main.sh", (), ("bash", "main.sh"), 20.0, 1024, (("bash", ("bash", "--version")),))


def go() -> Recipe:
    """`go test` in GOPATH mode (the sandbox sets GO111MODULE=off) with Debian's testify on the GOPATH.

    The image ships a build cache warmed with the std and testify packages the tests import (vet facts
    included: `go test` vets, as the reference does). Each program gets its own copy of it, so nothing one
    program compiles can reach the next, and `go test` takes ~1 s instead of ~9 s.
    """
    return Recipe("go", "main_test.go", (("cp", "-r", GO_CACHE_SEED, "/tmp/gocache"),),
                  ("env", "GOCACHE=/tmp/gocache", f"GOPATH=/tmp/.cache/gopath:{GO_LIBRARIES}", "go", "test",
                   "main_test.go"),
                  60.0, None, (("go", ("go", "version")),))


def rust() -> Recipe:
    """`rustc --test` (edition 2021, as HumanEval-X's Cargo.toml), then the test binary."""
    build = ("rustc", "--test", "--edition", "2021", "-C", "strip=debuginfo", "-A", "warnings",
             "-o", "main_test", "main.rs")
    return Recipe("rust", "main.rs", (build,), ("./main_test",), 60.0, None, (("rustc", ("rustc", "--version")),))


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
