"""MultiPL-E HumanEval (C++, Java, JavaScript, Bash): translated prompts, each language's stop tokens and tests.

The setting behind the HumanEval C++/Java/JS/Bash numbers reported for Codestral Mamba. The program is
MultiPL-E's `prompt + completion + "\\n" + tests`, run as its evaluators run it (eval_cpp, eval_java,
eval_javascript, eval_sh): pass means every command exits 0. The data has no canonical solutions, so
the reference backend cannot answer these tasks; tests/test_multipl_e.py carries hand-written ones.
"""

from __future__ import annotations

from evalkit import languages
from evalkit.backends.base import truncate_at_stop
from evalkit.data import file_provenance, hub_rows, read_jsonl, require_fields
from evalkit.execution import run_scored
from evalkit.requests import GenerationRequest
from evalkit.tasks import Scored, Task, TaskError, register

FIELDS = ("name", "prompt", "tests", "stop_tokens")
RECIPES = {
    "cpp": languages.cpp,
    "java": lambda: languages.java("Problem", (languages.JAVATUPLES_JAR,)),
    "js": languages.javascript,
    "sh": languages.bash,
}


class MultiPLE(Task):
    uses_sandbox = True
    timeout: float | None = None  # seconds per command; None: the language recipe's
    lang: str

    def docs(self) -> list[dict]:
        local = self.data.local(f"multipl-e/humaneval-{self.lang}.jsonl")
        if local is not None:
            rows = [row for _, row in read_jsonl(local)]
            self.provenance = file_provenance(local)
        else:
            rows, self.provenance = hub_rows("nuprl/MultiPL-E", "test", f"humaneval-{self.lang}", self.data.revision)
        docs = []
        for i, row in enumerate(rows):
            require_fields(row, FIELDS, f"{self.name} row {i}")
            docs.append({**row, "task_id": row["name"]})  # MultiPL-E's own id
        if not docs:
            raise TaskError(f"{self.name}: the dataset is empty")
        return docs

    def request(self, doc: dict) -> GenerationRequest:
        return GenerationRequest(doc["task_id"], doc["prompt"], tuple(doc["stop_tokens"]), 1024)

    def program(self, doc: dict, completion: str) -> str:
        return doc["prompt"] + truncate_at_stop(completion, doc["stop_tokens"]) + "\n" + doc["tests"]

    def score(self, doc: dict, completion: str, sandbox) -> Scored:
        text = self.program(doc, completion)
        return run_scored(sandbox, RECIPES[self.lang]().program(text, self.timeout), text)

    def settings(self) -> dict:
        return {
            "prompt": "the dataset prompt verbatim (reworded HumanEval translation), no few-shot",
            "stop": "the row's stop_tokens",
            "sanitizer": "cut at the stop tokens",
            "checker": "prompt + completion + '\\n' + tests; pass = every command exits 0",
            "run": RECIPES[self.lang]().describe() | ({"timeout_s_per_command": self.timeout} if self.timeout else {}),
        }

    def environment(self, sandbox) -> dict:
        extra = (languages.library_versions("libjavatuples-java"),) if self.lang == "java" else ()
        return languages.toolchain_environment(sandbox, RECIPES[self.lang](), extra)


for _lang in RECIPES:
    _attrs = {"__module__": __name__, "name": f"multipl-e-{_lang}", "lang": _lang}
    register(_attrs["name"])(type(f"MultiPLE_{_lang}", (MultiPLE,), _attrs))
