"""MultiPL-E HumanEval (C++, Java, JavaScript, Bash): translated prompts, each language's stop tokens and tests.

The setting behind the HumanEval C++/Java/JS/Bash numbers reported for Codestral Mamba. The program is
MultiPL-E's `prompt + completion + "\\n" + tests`, run as its evaluators run it (eval_cpp, eval_java,
eval_javascript, eval_sh): pass means every command exits 0. The data has no canonical solutions, so
the reference backend cannot answer these tasks; tests/test_multipl_e.py carries hand-written ones.
"""

from __future__ import annotations

from evalkit import languages
from evalkit.data import HubSplit, load_rows
from evalkit.execution import run_scored
from evalkit.requests import GenerationRequest
from evalkit.sanitize import truncate_at_stop
from evalkit.tasks import Scored, Task, register, timeout_option

FIELDS = {"name": str, "prompt": str, "tests": str, "stop_tokens": list}
RECIPES = {
    "cpp": languages.cpp,
    "java": lambda: languages.java("Problem", (languages.JAVATUPLES_JAR,)),
    "js": languages.javascript,
    "sh": languages.bash,
}


class MultiPLE(Task):
    uses_sandbox = True
    options = {"timeout": timeout_option(None, "15 s (MultiPL-E); default: the language recipe's")}
    lang: str

    def docs(self) -> list[dict]:
        rows, self.provenance = load_rows(self.data, self.name, local=f"multipl-e/humaneval-{self.lang}.jsonl",
                                          hub=[HubSplit("nuprl/MultiPL-E", "test", f"humaneval-{self.lang}")],
                                          fields=FIELDS, unique="name")
        return [{**row, "task_id": row["name"]} for row in rows]  # MultiPL-E's own id

    def request(self, doc: dict) -> GenerationRequest:
        return GenerationRequest(doc["task_id"], doc["prompt"], tuple(doc["stop_tokens"]), 1024)

    def program(self, doc: dict, completion: str) -> str:
        return doc["prompt"] + truncate_at_stop(completion, doc["stop_tokens"]) + "\n" + doc["tests"]

    def score(self, doc: dict, completion: str, sandbox) -> Scored:
        text = self.program(doc, completion)
        return run_scored(sandbox, RECIPES[self.lang]().program(text, self.option("timeout")), text)

    def settings(self) -> dict:
        return {
            "prompt": "the dataset prompt verbatim (reworded HumanEval translation), no few-shot",
            "stop": "the row's stop_tokens",
            "sanitizer": "cut at the stop tokens",
            "checker": "prompt + completion + '\\n' + tests; pass = every command exits 0",
            "run": RECIPES[self.lang]().describe() | self._timeout_setting(),
        }

    def _timeout_setting(self) -> dict:
        return {"timeout_s_per_command": self.option("timeout")} if self.option("timeout") else {}

    def environment(self, sandbox) -> dict:
        extra = (languages.library_versions("libjavatuples-java"),) if self.lang == "java" else ()
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
