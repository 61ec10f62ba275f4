"""MBPP (500 test problems, task ids 11-510) and MBPP-sanitized (257): the standard 3-shot [BEGIN]/[DONE] prompt.

Exemplars are task ids 2, 3 and 4 with all their tests, laid out as lm-evaluation-harness's `mbpp` task
does. `--prompt zero-shot` drops the exemplars. The program is code_eval's: the completion's code executed
into a fresh namespace (so an `if __name__ == "__main__":` demo block does not run), then the asserts of
`test_list`, run by the sandbox's trusted Python harness. Full MBPP's `test_setup_code` (tasks 367 and 927)
runs before the asserts; sanitized MBPP's `test_imports` come before the code. DELIBERATE_DIFFERENCES lists
every way a verdict can differ from lm-eval's mbpp task (HF code_eval).
"""

from __future__ import annotations

import ast

from evalkit import harness, languages
from evalkit.data import HubSplit, load_rows
from evalkit.execution import run_scored
from evalkit.requests import GenerationRequest
from evalkit.sanitize import FENCE, sanitize_python_completion
from evalkit.tasks import Scored, Task, TaskError, register, timeout_option
from tasks import _instruct

STOP = ("[DONE]",)
EXEMPLAR_IDS = (2, 3, 4)
TEST_IDS = range(11, 511)
HUB = "google-research-datasets/mbpp"
TIMEOUT_S = 60.0  # wall-clock, generous: task 123's own solution needs ~4 s of CPU, 20+ s on a loaded machine
REFERENCE_TIMEOUT_S = 3.0  # HF code_eval's default
# Reference solutions that fail their own tests, by task id, with the reason (none found: see the tests).
KNOWN_BROKEN: dict[str, dict[str, str]] = {"mbpp": {}, "mbpp-sanitized": {}}
DELIBERATE_DIFFERENCES = harness.PYTHON_DIFFERENCES | {
    "test-setup-code": "full MBPP's test_setup_code (tasks 367 and 927 build a tree of the completion's Node "
                       "class) runs before the asserts; lm-eval's mbpp leaves it out, so every completion fails "
                       "those two there",
    "sanitizer": "a leading markdown fence is dropped, the completion is cut at [DONE] and markdown fences, and "
                 "trailing lines that do not parse are dropped (code_eval executes the text as is)",
    "limits": f"{TIMEOUT_S:g} s wall clock and 1 GiB of address space per program (code_eval: "
              f"{REFERENCE_TIMEOUT_S:g} s); `--task-option timeout=3` applies the reference's time limit",
}


def describe_problem(text: str, tests: list[str]) -> str:
    tests_text = "\n".join(tests)
    return (f"You are an expert Python programmer, and here is your task: {text} "
            f"Your code should pass these tests:\n\n{tests_text}\n[BEGIN]\n")


def chat_problem(text: str, tests: list[str]) -> str:
    """The task as the user turn of the instruct variant: the completion prompt's words, without [BEGIN]."""
    return describe_problem(text, tests).removesuffix("[BEGIN]\n").rstrip("\n")


def tested_functions(reference_code: str, tests: list[str]) -> list[str]:
    """The names the tests call that the reference solution defines: what an answer must define."""
    try:
        test_tree, reference_tree = ast.parse("\n".join(tests)), ast.parse(reference_code)
    except SyntaxError:  # no row of MBPP or MBPP-sanitized; such a row checks nothing here and fails its tests
        return []
    called = {node.func.id for node in ast.walk(test_tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    defined = [node.name for node in reference_tree.body
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    return [name for name in defined if name in called]


@register("mbpp")
class MBPP(Task):
    name = "mbpp"
    uses_sandbox = True
    prompt_variants = ("3-shot", "zero-shot")
    supports_chat = True
    options = {"timeout": timeout_option(TIMEOUT_S, f"{REFERENCE_TIMEOUT_S:g} s (code_eval)")}
    text_field = "text"
    local_file = "mbpp/mbpp.jsonl"
    hub_config = "full"

    def docs(self) -> list[dict]:
        rows, self.provenance = load_rows(
            self.data, self.name, local=self.local_file,
            hub=[HubSplit(HUB, "prompt", self.hub_config), HubSplit(HUB, "test", self.hub_config)],
            fields={"task_id": int, self.text_field: str, "code": str, "test_list": list}, unique="task_id")
        by_id = {row["task_id"]: row for row in rows}
        missing = [i for i in EXEMPLAR_IDS if i not in by_id]
        if missing:
            raise TaskError(f"{self.name}: the few-shot exemplars (task ids {missing}) are missing from the data")
        self.exemplars = [by_id[i] for i in EXEMPLAR_IDS]
        docs = [{**row, "task_id": str(row["task_id"])} for row in rows if row["task_id"] in TEST_IDS]
        if not docs:
            raise TaskError(f"{self.name}: no rows with task ids 11-510 (the test split)")
        return docs

    def prompt(self, doc: dict) -> str:
        shots = [] if self.prompt_variant == "zero-shot" else self.exemplars
        parts = [describe_problem(s[self.text_field], s["test_list"]) + s["code"] + "\n[DONE]" for s in shots]
        return "\n\n".join(parts + [describe_problem(doc[self.text_field], doc["test_list"])])

    def request(self, doc: dict) -> GenerationRequest:
        if self.chat:  # the same task text; exemplars become turns answered with a fenced block
            shots = [] if self.prompt_variant == "zero-shot" else self.exemplars
            pairs = [(chat_problem(s[self.text_field], s["test_list"]), _instruct.fenced(s["code"], "python"))
                     for s in shots]
            messages = _instruct.turns(pairs, chat_problem(doc[self.text_field], doc["test_list"]))
            return _instruct.chat_request(doc["task_id"], messages, _instruct.fence_prefix("python"), _instruct.STOP,
                                          512, doc["code"].strip("\n") + _instruct.CLOSING_FENCE)
        return GenerationRequest(doc["task_id"], self.prompt(doc), STOP, 512, reference=doc["code"] + "\n[DONE]")

    def setup(self, doc: dict) -> tuple[str, str]:
        """Code placed before the completion (in its module), and test setup run before the asserts."""
        return "", doc.get("test_setup_code") or ""

    def program(self, doc: dict, completion: str) -> harness.TestSource:
        if self.chat:
            completion = _instruct.code_of("python", completion)
        lines = completion.split("\n")
        if lines and FENCE.match(lines[0]):  # a zero-shot answer in a markdown block
            completion = "\n".join(lines[1:])
        code = sanitize_python_completion("", completion, STOP)
        before, setup = self.setup(doc)
        return harness.python_tests(before + code, setup, doc["test_list"],
                                    entry_points=tested_functions(doc["code"], doc["test_list"]))

    def score(self, doc: dict, completion: str, sandbox) -> Scored:
        if self.chat:
            code = _instruct.code_of("python", completion)
            if why := _instruct.undefined("python", code, tested_functions(doc["code"], doc["test_list"])):
                return Scored("failed", program=code, error=why)
        source = self.program(doc, completion)
        return run_scored(sandbox, languages.python().tests(source, self.option("timeout")), source.shown)

    def settings(self) -> dict:
        zero_shot = self.prompt_variant == "zero-shot"
        chat = _instruct.code_settings("python", "test setup + answer code + every assert of test_list, python3, "
                                       "exit 0 and success marker") | {
            "prompt": "chat: the task text and its tests (as in the completion prompt, without [BEGIN]) as the user "
                      "turn; " + ("no exemplars" if zero_shot else "the exemplars as turns answered in ```python "
                                                                    "blocks"),
            "sanitizer": "first fenced block of response prefix + completion; drop unparsable trailing lines; the "
                         "functions the tests call (those the reference solution defines) must be defined",
        } if self.chat else {}
        return {
            "prompt": "zero-shot" if zero_shot else f"3-shot (task ids {list(EXEMPLAR_IDS)}), all tests shown, "
                                                   "[BEGIN]/[DONE]",
            "exemplar_ids": [] if zero_shot else list(EXEMPLAR_IDS),
            "stop": list(STOP),
            "sanitizer": "drop a leading markdown fence; cut at [DONE] and fences; drop unparsable trailing lines",
            "checker": "code_eval's program (completion as a module, not __main__; test setup; every assert of "
                       "test_list) under evalkit's Python test harness; pass = the harness's end-of-tests signal",
            "run": languages.python().describe() | {"timeout_s_per_command": self.option("timeout")},
            "reference_timeout_s": REFERENCE_TIMEOUT_S,
            "reference_scorer": "lm-eval mbpp (HF code_eval)",
            "deliberate_differences": DELIBERATE_DIFFERENCES,
        } | chat

    def environment(self, sandbox) -> dict:
        return languages.toolchain_environment(sandbox, languages.python())


@register("mbpp-sanitized")
class MBPPSanitized(MBPP):
    name = "mbpp-sanitized"
    text_field = "prompt"
    local_file = "mbpp/sanitized-mbpp.json"
    hub_config = "sanitized"

    def setup(self, doc: dict) -> tuple[str, str]:
        imports = doc.get("test_imports") or []
        return "".join(f"{line}\n" for line in imports), ""
