"""MultiPL-E HumanEval (C++, Java, JavaScript, Bash): translated prompts, each language's stop tokens and tests.

The setting behind the HumanEval C++/Java/JS/Bash numbers reported for Codestral Mamba. The program is
MultiPL-E's `prompt + completion + "\\n" + tests`, built and run as its evaluators do (eval_cpp, eval_java,
eval_javascript, eval_sh), under each language's trusted test harness (evalkit.harness): pass means every
command exits 0 and the tests signal that they ran to their end. The data has no canonical solutions, so the
reference backend cannot answer these tasks; tests/test_multipl_e.py carries hand-written ones.
DELIBERATE_DIFFERENCES lists every way a verdict can differ from MultiPL-E's run rule.
"""

from __future__ import annotations

import re

from evalkit import harness, languages
from evalkit.data import HubSplit, load_rows
from evalkit.execution import run_scored
from evalkit.requests import GenerationRequest
from evalkit.sanitize import truncate_at_stop
from evalkit.tasks import Scored, Task, register, timeout_option
from tasks import _instruct

FIELDS = {"name": str, "prompt": str, "tests": str, "stop_tokens": list}
RECIPES = {
    "cpp": languages.cpp,
    "java": lambda: languages.java("Problem", (languages.JAVATUPLES_JAR,)),
    "js": languages.javascript,
    "sh": languages.bash,
}
REFERENCE_TIMEOUT_S = 15.0  # MultiPL-E's evaluators (per program, compile included)
EVALUATORS = {"cpp": "eval_cpp", "java": "eval_java", "js": "eval_javascript", "sh": "eval_sh"}
DELIBERATE_DIFFERENCES = {
    "end-of-tests-signal": "a program that exits with status 0 before its tests end fails (a static initializer "
                           "or shutdown hook that exits, a module-level process.exit(0), a bash trap 'exit 0' "
                           "EXIT); MultiPL-E passes any exit status 0",
    "tests-out-of-reach": "the completion cannot change the tests: C++ tests come before it, so its macros "
                          "(#define assert) do not reach them, and use an assert it cannot interpose; JavaScript "
                          "tests run in a scope of their own (a hoisted `function require` or a patched assert, "
                          "JSON or Math is not theirs); each bash call of the completion runs in a fresh bash "
                          "(a function named `set` or a trap cannot reach the tests) whose top-level output goes "
                          "to stderr",
    "limits": f"per command: 60 s (C++, Java: the compile and the run each) or 20 s (JavaScript, Bash) of wall "
              f"clock (MultiPL-E: {REFERENCE_TIMEOUT_S:g} s per program); `--task-option timeout=15` applies the "
              "reference's limit to each command",
}


# The prompt lines a chat answer may leave out and gets for free (repeating them is harmless), by language.
CHAT_PREAMBLE = {"cpp": (r"^#include\b.*$", "#include lines"), "java": (r"^import\b.*$", "import lines")}


def chat_program(lang: str, prompt: str, code: str, tests: str) -> str:
    """A chat answer's whole code between the prompt's preamble and the tests."""
    return "".join(chat_parts(lang, prompt, code, tests))


def chat_parts(lang: str, prompt: str, code: str, tests: str) -> tuple[str, str]:
    """A chat answer's program as (the prompt's preamble + the answer's code, the tests).

    MultiPL-E's tests open with the `}` that closes the prompt's function (Java: the method, inside class
    Problem, before the tests' own main); a chat answer closes its function itself, so that line goes.
    """
    preamble = ""
    if lang in CHAT_PREAMBLE:
        preamble = "".join(line + "\n" for line in re.findall(CHAT_PREAMBLE[lang][0], prompt, re.M))
    first, _, rest = tests.partition("\n")
    tests = rest if first.strip() == "}" else tests
    if lang == "cpp":
        code = _instruct.cut_at_line(code, r"^\s*int\s+main\s*\(")
    if lang == "java":  # the tests' main goes inside class Problem, in place of the answer's closing brace
        if not re.search(r"\bclass\s+Problem\b", code):
            code = f"class Problem {{\n{code}\n}}"
        main = code.find("public static void main")
        code = code[:main] if main != -1 else code[: code.rfind("}")]
    return f"{preamble}{code.rstrip()}\n", tests


class MultiPLE(Task):
    uses_sandbox = True
    supports_chat = True
    options = {"timeout": timeout_option(None, f"{REFERENCE_TIMEOUT_S:g} s (MultiPL-E); default: the language "
                                               "recipe's")}
    lang: str

    def docs(self) -> list[dict]:
        rows, self.provenance = load_rows(self.data, self.name, local=f"multipl-e/humaneval-{self.lang}.jsonl",
                                          hub=[HubSplit("nuprl/MultiPL-E", "test", f"humaneval-{self.lang}")],
                                          fields=FIELDS, unique="name")
        return [{**row, "task_id": row["name"]} for row in rows]  # MultiPL-E's own id

    def request(self, doc: dict) -> GenerationRequest:
        if self.chat:
            return _instruct.code_request(doc["task_id"], self.lang, doc["prompt"], 1024, None)
        return GenerationRequest(doc["task_id"], doc["prompt"], tuple(doc["stop_tokens"]), 1024)

    def reference_program(self, doc: dict, completion: str) -> str:
        """MultiPL-E's program text: prompt + completion (cut at the stop tokens) + "\\n" + tests."""
        if self.chat:
            return chat_program(self.lang, doc["prompt"], _instruct.code_of(self.lang, completion), doc["tests"])
        return doc["prompt"] + truncate_at_stop(completion, doc["stop_tokens"]) + "\n" + doc["tests"]

    def program(self, doc: dict, completion: str) -> harness.TestSource:
        """The same program under the language's test harness."""
        if self.chat:
            code = _instruct.code_of(self.lang, completion)
            before, tests = chat_parts(self.lang, doc["prompt"], code, doc["tests"])
            if self.lang == "cpp":
                return harness.cpp_tests_after(before, tests)
            if self.lang == "java":
                return harness.java_tests(before + tests, "Problem")
            if self.lang == "js":
                return harness.js_tests(doc["prompt"], code + "\n", doc["tests"], whole_answer=True)
            return harness.bash_tests(doc["prompt"], code, doc["tests"], whole_answer=True)
        body = truncate_at_stop(completion, doc["stop_tokens"])
        if self.lang == "cpp":
            return harness.cpp_tests(doc["prompt"], body + "\n", doc["tests"], tests_close_function=True)
        if self.lang == "java":
            return harness.java_tests(self.reference_program(doc, completion), "Problem")
        if self.lang == "js":
            return harness.js_tests(doc["prompt"], body + "\n", doc["tests"])
        return harness.bash_tests(doc["prompt"], body, doc["tests"])

    def score(self, doc: dict, completion: str, sandbox) -> Scored:
        if self.chat:
            code = _instruct.code_of(self.lang, completion)
            if why := _instruct.undefined(self.lang, code, [_instruct.last_defined(doc["prompt"], self.lang)]):
                return Scored("failed", program=code, error=why)
        source = self.program(doc, completion)
        return run_scored(sandbox, RECIPES[self.lang]().tests(source, self.option("timeout")), source.shown)

    def settings(self) -> dict:
        chat = _instruct.code_settings(self.lang, "the prompt's " + CHAT_PREAMBLE.get(self.lang, ("", "nothing"))[1]
                                       + " + answer code (Java: inside class Problem, without its own main; C++: "
                                       "without its own main) + tests without the '}' that closes the prompt's "
                                       "function, under evalkit's test harness; pass = every command exits 0 and "
                                       "the tests signal their end") if self.chat else {}
        return {
            "prompt": "the dataset prompt verbatim (reworded HumanEval translation), no few-shot",
            "stop": "the row's stop_tokens",
            "sanitizer": "cut at the stop tokens",
            "checker": "prompt + completion + '\\n' + tests under evalkit's test harness; pass = every command "
                       "exits 0 and the tests signal their end",
            "run": RECIPES[self.lang]().describe() | self._timeout_setting(),
            "reference_timeout_s": REFERENCE_TIMEOUT_S,
            "reference_scorer": f"MultiPL-E {EVALUATORS[self.lang]}",
            "deliberate_differences": DELIBERATE_DIFFERENCES,
        } | chat

    def _timeout_setting(self) -> dict:
        return {"timeout_s_per_command": self.option("timeout")} if self.option("timeout") else {}

    def environment(self, sandbox) -> dict:
        extra = (languages.library_versions("libjavatuples-java"),) if self.lang == "java" else ()
        extra += (languages.library_versions("bc"),) if self.lang == "sh" else ()
        return languages.toolchain_environment(sandbox, RECIPES[self.lang](), extra)


@register("multipl-e-cpp")
class MultiPLECpp(MultiPLE):
    name, lang = "multipl-e-cpp", "cpp"


@register("multipl-e-java")
class MultiPLEJava(MultiPLE):
    name, lang = "multipl-e-java", "java"


@register("multipl-e-js")
class MultiPLEJavaScript(MultiPLE):
    name, lang = "multipl-e-js", "js"


@register("multipl-e-sh")
class MultiPLEBash(MultiPLE):
    name, lang = "multipl-e-sh", "sh"
