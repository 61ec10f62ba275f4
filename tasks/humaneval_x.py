"""HumanEval-X (C++, Java, JavaScript, Go, Rust; 164 each): CodeGeeX's translations, with canonical solutions.

Programs are assembled as CodeGeeX's evaluate_humaneval_x.py does and run with evalkit.languages' recipes,
under each language's trusted test harness (evalkit.harness): pass needs the tests to signal that they ran
to their end. The prompt is the dataset's `prompt` (Rust: the declaration, which holds the signature, then
the docstring). JavaScript passes, as in the reference, only when the program prints nothing (its tests
use console.assert, which only writes to stderr), and additionally exits 0. Rust compiles with `rustc`, not
Cargo, so the declaration's `use rand/regex/md5` lines are dropped from prompt and program (no crates are
available). KNOWN_BROKEN lists the tasks that need a crate, with the canonical solutions that fail for other
reasons; DELIBERATE_DIFFERENCES every way a verdict can differ from CodeGeeX's.
"""

from __future__ import annotations

import re

from evalkit import harness, languages
from evalkit.data import HubSplit, load_rows
from evalkit.execution import run_scored, scored_from_execution
from evalkit.requests import GenerationRequest
from evalkit.sanitize import truncate_at_stop
from evalkit.tasks import Scored, Task, register, timeout_option
from tasks import _instruct

FIELDS = {"task_id": str, "prompt": str, "declaration": str, "canonical_solution": str, "test": str}
HUB_CONFIG = {"cpp": "cpp", "java": "java", "js": "js", "go": "go", "rust": "rust"}
STOP = {
    "cpp": ("\nint main(", "\n#include", "\n#undef"),
    "java": ("\npublic class Main", "public static void main"),
    "js": ("\nconsole.log", "\n/*", "\n//", "\nconst test"),
    "go": ("\nfunc main(", "\n//", "\nfunc Test"),
    "rust": ("\nfn main(", "\n#[cfg(test)]", "\n//", "\n/*"),
}
# CodeGeeX's IMPORT_HELPER: headers/packages added when the prompt lacks them.
CPP_INCLUDES = ("#include<stdlib.h>", "#include<algorithm>", "#include<math.h>", "#include<stdio.h>",
                "#include<vector>", "#include<string>", "#include<climits>", "#include<cstring>", "#include<iostream>")
GO_PACKAGES = ("math", "strings", "fmt", "strconv", "time", "bytes", "regexp", "sort", "math/rand", "crypto/md5")
RUST_CRATE_USES = re.compile(r"^use (rand::Rng|regex::Regex|md5);\n", re.M)
RUST_MAIN = "\nfn main(){ \n } \n"  # HumanEval-X's Rust crate is a binary: cargo test needs a main
# CodeGeeX's evaluate_functional_correctness: 5 s per compile and per run by default; Rust's cargo runs unbounded.
REFERENCE_TIMEOUT_S = {"cpp": 5.0, "java": 5.0, "js": 5.0, "go": 5.0, "rust": None}
DELIBERATE_DIFFERENCES = {
    "end-of-tests-signal": "a program that exits with status 0 before its tests end fails (a static initializer "
                           "or Rust constructor that exits, a Java shutdown hook that halts with 0, a module-level "
                           "process.exit(0), a Go TestMain that skips the tests); CodeGeeX passes any exit status 0, "
                           "and for JavaScript any silent exit, whatever its status",
    "tests-out-of-reach": "the completion cannot change the tests: C++ tests come before it (its macros, such as "
                          "#define assert, do not reach them) and use an assert it cannot interpose; JavaScript "
                          "tests run in a scope of their own, with console.assert throwing on failure and assert, "
                          "JSON, Math and toJSON frozen; Rust tests come before it (its macro_rules! cannot shadow "
                          "assert!)",
    "rust-refused-attributes": "a Rust completion using #[link_section], global_asm!, #[no_mangle] or "
                               "#[export_name] fails without running: they run code before main or replace "
                               "functions the harness calls",
    "rust-no-cargo": "Rust builds with rustc, without Cargo and crates: the five problems that need rand, regex or "
                     "md5 cannot pass (KNOWN_BROKEN)",
    "limits": "per command, 60 s of wall clock for C++, Java, Go and Rust and 20 s for JavaScript (CodeGeeX: 5 s "
              "per compile and per run by default, no limit for Rust's cargo); `--task-option timeout=5` applies the "
              "reference's",
}

# Canonical solutions that pass or fail by chance, here as in the reference, with the reason.
NONDETERMINISTIC: dict[str, dict[str, str]] = {
    "cpp": {}, "java": {}, "js": {}, "rust": {},
    "go": {"Go/95": "it stops after the first two keys of a map, whose iteration order Go randomizes: with 'A' "
                    "and 'B' first it answers true for {p, A, B} (about one run in three)"},
}
# Canonical solutions that fail here, by task id, with the reason (found by the reference self-check).
KNOWN_BROKEN: dict[str, dict[str, str]] = {
    "cpp": {}, "java": {}, "go": {},
    "js": {
        "JavaScript/112": "returns `(z, false)`: the comma operator yields a boolean, not the [string, bool] pair",
        "JavaScript/155": "counts the parity of the whole remaining number, not of each digit",
        "JavaScript/162": "requires the npm package js-md5, which the sandbox image (Debian packages) lacks",
    },
    "rust": {
        "Rust/38": "its tests use the rand crate, which `rustc --test` without Cargo cannot provide",
        "Rust/50": "its tests use the rand crate, which `rustc --test` without Cargo cannot provide",
        "Rust/53": "its tests use the rand crate, which `rustc --test` without Cargo cannot provide",
        "Rust/91": "uses the regex crate, which `rustc --test` without Cargo cannot provide",
        "Rust/162": "uses the md5 crate, which `rustc --test` without Cargo cannot provide",
    },
}


class HumanEvalX(Task):
    uses_sandbox = True
    supports_chat = True
    options = {"timeout": timeout_option(None, "5 s per compile and run (CodeGeeX); default: the recipe's")}
    lang: str

    def docs(self) -> list[dict]:
        fields = FIELDS | ({"import": str, "test_setup": str} if self.lang == "go" else {})
        rows, self.provenance = load_rows(self.data, self.name, local=f"humaneval-x/humaneval_{self.lang}.jsonl.gz",
                                          hub=[HubSplit("THUDM/humaneval-x", "test", HUB_CONFIG[self.lang])],
                                          fields=fields, unique="task_id")
        return rows

    def prompt(self, doc: dict) -> str:
        if self.lang == "rust":  # the prompt field is only the docstring; the signature is in the declaration
            return RUST_CRATE_USES.sub("", doc["declaration"]) + doc["prompt"]
        return doc["prompt"]

    def request(self, doc: dict) -> GenerationRequest:
        if self.chat:
            return _instruct.code_request(doc["task_id"], self.lang, self.prompt(doc), 1024,
                                          self.prompt(doc) + doc["canonical_solution"])
        return GenerationRequest(doc["task_id"], self.prompt(doc), STOP[self.lang], 1024,
                                 reference=doc["canonical_solution"])

    def _code(self, completion: str) -> str:
        return cleanup(truncate_at_stop(completion, STOP[self.lang]), self.lang)

    def _cpp_includes(self, doc: dict) -> str:
        return "".join(s + "\n" for s in CPP_INCLUDES if s not in doc["prompt"])

    def _go_parts(self, doc: dict, code: str) -> tuple[str, str]:
        """The import block CodeGeeX adds for the packages the code uses, and prompt (without its imports) + code."""
        others = [f'"{p}"' for p in GO_PACKAGES if p not in doc["test_setup"] and p.split("/")[-1] + "." in code]
        imports = ("import (\n" + "    ".join(p + "\n" for p in others) + ")\n") if others else ""
        return imports, doc["prompt"].replace(doc["import"], "") + code

    def reference_program(self, doc: dict, completion: str) -> str:
        """CodeGeeX's program text (evaluate_humaneval_x.py's process_humaneval_test; Rust as HumanEval-X's
        cargo crate gets it: an empty main, the declaration, the completion, the tests)."""
        if self.chat:
            return chat_program(self.lang, doc, _instruct.code_of(self.lang, completion))
        code = self._code(completion)
        if self.lang == "cpp":
            return self._cpp_includes(doc) + "\n" + doc["prompt"] + code + "\n" + doc["test"]
        if self.lang == "go":
            imports, body = self._go_parts(doc, code)
            return doc["test_setup"] + "\n" + imports + body + "\n" + doc["test"]
        if self.lang == "rust":
            return RUST_MAIN + self.prompt(doc) + code + doc["test"]
        return doc["prompt"] + code + "\n" + doc["test"]

    def program(self, doc: dict, completion: str) -> harness.TestSource:
        """CodeGeeX's program for the completion, under the language's test harness."""
        if self.chat:
            return chat_source(self.lang, doc, _instruct.code_of(self.lang, completion))
        code = self._code(completion)
        if self.lang == "cpp":
            return harness.cpp_tests(doc["prompt"], code + "\n", doc["test"], head=self._cpp_includes(doc) + "\n")
        if self.lang == "go":
            imports, body = self._go_parts(doc, code)
            return harness.go_tests(doc["test_setup"], imports, body, doc["test"])
        if self.lang == "rust":
            return harness.rust_tests(self.prompt(doc), code, doc["test"])
        if self.lang == "java":
            return harness.java_tests(self.reference_program(doc, completion), "Main")
        return harness.js_tests(doc["prompt"], code + "\n", doc["test"])

    def recipe(self, doc: dict | None = None) -> languages.Recipe:
        if self.lang == "cpp":  # the reference links OpenSSL for the md5 task only
            return languages.cpp(("-lcrypto", "-lssl") if doc and "openssl/" in doc["prompt"] else ())
        return {"java": lambda: languages.java("Main", assertions=False), "js": languages.javascript,
                "go": languages.go, "rust": languages.rust}[self.lang]()

    def score(self, doc: dict, completion: str, sandbox) -> Scored:
        if self.chat:
            code = _instruct.code_of(self.lang, completion)
            if why := _instruct.undefined(self.lang, code, [_instruct.last_defined(self.prompt(doc), self.lang)]):
                return Scored("failed", program=code, error=why)
        if self.lang == "rust" and (why := harness.rust_forbidden(completion)):
            return Scored("failed", error=why)
        source = self.program(doc, completion)
        program = self.recipe(doc).tests(source, self.option("timeout"))
        if sandbox is None:
            return run_scored(sandbox, program, source.shown)
        execution = sandbox.run(program)
        scored = scored_from_execution(execution, source.shown)
        printed = (execution.stderr + execution.stdout).strip()
        if self.lang == "js" and scored.passed and printed:
            why = f"the tests printed (a failed console.assert?):\n{printed[-2000:]}"
            return Scored("failed", program=source.shown, error=why)
        return scored

    def settings(self) -> dict:
        chat = _instruct.code_settings(self.lang, CHAT_CHECKER[self.lang]) if self.chat else {}
        return {
            "prompt": "the dataset prompt verbatim" + (" (Rust: declaration without crate uses + docstring)"
                                                      if self.lang == "rust" else ""),
            "stop": list(STOP[self.lang]),
            "sanitizer": "cut at stop sequences, then CodeGeeX's cleanup_code (up to the last closing brace)",
            "checker": "CodeGeeX's program assembly under evalkit's test harness; pass = every command exits 0 "
                       "and the tests signal their end" + ("; and no output at all (console.assert)"
                                                           if self.lang == "js" else ""),
            "run": self.recipe().describe() | self._timeout_setting(),
            "reference_timeout_s": REFERENCE_TIMEOUT_S[self.lang] or "none (cargo test)",
            "reference_scorer": "CodeGeeX evaluate_humaneval_x",
            "known_broken_canonical": KNOWN_BROKEN[self.lang],
            "nondeterministic_canonical": NONDETERMINISTIC[self.lang],
            "deliberate_differences": DELIBERATE_DIFFERENCES,
        } | chat

    def _timeout_setting(self) -> dict:
        return {"timeout_s_per_command": self.option("timeout")} if self.option("timeout") else {}

    def environment(self, sandbox) -> dict:
        extra = {"go": (languages.library_versions("golang-github-stretchr-testify-dev"),),
                 "cpp": (languages.library_versions("libssl-dev", "libboost-dev"),)}.get(self.lang, ())
        return languages.toolchain_environment(sandbox, self.recipe(), extra)


CHAT_CHECKER = {
    "cpp": "CodeGeeX's includes + the prompt's #include/using lines + answer code without its own main, up to its "
           "last closing brace + test",
    "java": "the prompt's import lines + answer code (class Solution not public, without its own main) + test",
    "js": "answer code up to its last closing brace + test; pass = exit 0 and no output at all",
    "go": "test_setup + the imports the answer's code uses (its own and CodeGeeX's list) + answer code without "
          "package, import and main + test",
    "rust": "fn main (unless the answer has one) + answer code without crate uses + test",
}
GO_IMPORTS = re.compile(r"^import\s*\((.*?)^\)[ \t]*$|^import[ \t]+(.+)$", re.M | re.S)


def chat_program(lang: str, doc: dict, code: str) -> str:
    """The program for a chat answer, which holds the whole function (and what it needs) rather than its body."""
    if lang == "cpp":
        return _chat_cpp(doc, code) + "\n" + doc["test"]
    if lang == "java":
        return _chat_java(doc, code) + "\n" + doc["test"]
    if lang == "js":
        return cleanup(code, "js") + "\n" + doc["test"]
    if lang == "go":
        imports, code = _chat_go(doc, code)
        return doc["test_setup"] + "\n" + imports + code + "\n" + doc["test"]
    code = RUST_CRATE_USES.sub("", code)
    return ("" if re.search(r"\bfn\s+main\s*\(", code) else RUST_MAIN) + code + doc["test"]


def chat_source(lang: str, doc: dict, code: str) -> harness.TestSource:
    """The same program for a chat answer, under the language's test harness (the tests after the answer)."""
    if lang == "cpp":
        return harness.cpp_tests_after(_chat_cpp(doc, code) + "\n", doc["test"])
    if lang == "java":
        return harness.java_tests(chat_program(lang, doc, code), "Main")
    if lang == "js":
        return harness.js_tests(doc["prompt"], cleanup(code, "js") + "\n", doc["test"], whole_answer=True)
    if lang == "go":
        imports, code = _chat_go(doc, code)
        return harness.go_tests(doc["test_setup"], imports, code, doc["test"])
    return harness.rust_tests("", RUST_CRATE_USES.sub("", code), doc["test"])


def _chat_cpp(doc: dict, code: str) -> str:
    preamble = "".join(line + "\n" for line in re.findall(r"^(?:#include\b|using namespace\b).*$",
                                                            doc["prompt"], re.M))
    code = cleanup(_instruct.cut_at_line(code, r"^\s*int\s+main\s*\("), "cpp")
    return "".join(s + "\n" for s in CPP_INCLUDES) + preamble + code


def _chat_java(doc: dict, code: str) -> str:
    """The test is public class Main in Main.java: the answer's class cannot be public."""
    code = re.sub(r"\bpublic\s+(?=(?:final\s+)?class\s+Solution\b)", "", code)
    imports = "".join(line + "\n" for line in re.findall(r"^import\b.*$", doc["prompt"], re.M))
    return imports + cleanup(code, "java")


def _chat_go(doc: dict, code: str) -> tuple[str, str]:
    """The import block for the packages a chat answer uses (its own imports and CodeGeeX's), and its code."""
    specs = [spec.strip() for m in GO_IMPORTS.finditer(code) for spec in (m[1] or m[2]).splitlines()]
    code = re.sub(r"^package\s+\w+[ \t]*$", "", GO_IMPORTS.sub("", code), flags=re.M)
    code = _instruct.cut_at_line(code, r"^func\s+main\s*\(")
    uncommented = re.sub(r"//.*", "", code)  # "a list of strings." in a comment does not use strings
    used: dict[str, str] = {}
    for spec in [s for s in specs if s and not s.startswith("//")] + [f'"{p}"' for p in GO_PACKAGES]:
        alias, _, path = spec.rpartition(" ")
        path = path.strip('"')
        name = alias or path.split("/")[-1]
        if f'"{path}"' not in doc["test_setup"] and re.search(rf"\b{re.escape(name)}\.", uncommented):
            used.setdefault(path, spec)
    imports = ("import (\n" + "".join(f"    {spec}\n" for spec in used.values()) + ")\n") if used else ""
    return imports, code.strip("\n")


def cleanup(code: str, lang: str) -> str:
    """CodeGeeX's cleanup_code: keep the completion up to its last closing brace (Java: close the class)."""
    if lang == "java":
        main = code.find("public static void main")
        if main != -1:
            code = code[:main] + "}"
        if "}" in code:
            code = code[: code.rfind("}")] + "}"
        if code.count("{") + 1 == code.count("}"):
            code += "\n}"
    elif lang == "go":
        for word in ("\n//", "\nfunc main("):
            if word in code:
                code = code[: code.rfind(word)]
        if "}" in code:
            code = code[: code.rfind("}")] + "}"
    elif lang in ("cpp", "js") and "}" in code:
        code = code[: code.rfind("}")] + "}"
    return code


@register("humaneval-x-cpp")
class HumanEvalXCpp(HumanEvalX):
    name, lang = "humaneval-x-cpp", "cpp"


@register("humaneval-x-java")
class HumanEvalXJava(HumanEvalX):
    name, lang = "humaneval-x-java", "java"


@register("humaneval-x-js")
class HumanEvalXJavaScript(HumanEvalX):
    name, lang = "humaneval-x-js", "js"


@register("humaneval-x-go")
class HumanEvalXGo(HumanEvalX):
    name, lang = "humaneval-x-go", "go"


@register("humaneval-x-rust")
class HumanEvalXRust(HumanEvalX):
    name, lang = "humaneval-x-rust", "rust"
