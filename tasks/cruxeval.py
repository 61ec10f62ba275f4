"""CRUXEval-O and CRUXEval-I (800 Python functions each): the paper's 2-shot direct prompts, checked by execution.

The answer is read from the completion exactly as CRUXEval's postprocess_generation reads it for the direct
prompts (the completion is already cut at [/ANSWER]; -O: the text after the first `==`; -I: the text before
it, after `assert`). As CRUXEval's evaluate_score: an -O prediction that contains the call `f(<input>)` fails,
an -I prediction without `f(` fails, and the rest is checked as `{output} == {prediction}` after the
function's code, with CRUXEval's 3 s timeout, in the sandbox's trusted Python harness. Unlike CRUXEval, which
pastes the text into `assert {output} == {prediction}`, the prediction is parsed as one expression (see
DELIBERATE_DIFFERENCES). The published pass@1 is the unbiased estimate from n=10 samples at temperature 0.2
(top-p 0.95): `--n-samples 10 --temperature 0.2 --top-p 0.95`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from evalkit import harness, languages
from evalkit.data import HubSplit, load_rows
from evalkit.execution import run_scored
from evalkit.requests import GenerationRequest, SamplingParams
from evalkit.sanitize import truncate_at_stop
from evalkit.tasks import Scored, Task, register, timeout_option
from tasks import _instruct

STOP = ("[/ANSWER]",)
PUBLISHED_SAMPLING = {"n": 10, "temperature": 0.2, "top_p": 0.95}
TIMEOUT_S = 3.0  # CRUXEval's check_correctness
DELIBERATE_DIFFERENCES = {k: v for k, v in harness.PYTHON_DIFFERENCES.items() if k != "tests-namespace"} | {
    "one-expression": "the prediction is parsed as one expression and compared as output == (prediction): "
                      "CRUXEval pastes the text into `assert {output} == {prediction}`, where `or`, `and`, `not`, "
                      "a conditional expression, a top-level comma (an assert message) or a second line change "
                      "what is asserted (`1 or f(0)` passes any -I problem there); text that is not one "
                      "expression fails here",
}

OUTPUT_PROMPT = """You are given a Python function and an assertion containing an input to the function. Complete the assertion with a literal (no unsimplified expressions, no function calls) containing the output when executing the provided code on the given input, even if the function is incorrect or incomplete. Do NOT output any extra information. Provide the full assertion with the correct output in [ANSWER] and [/ANSWER] tags, following the examples.

[PYTHON]
def f(n):
    return n
assert f(17) == ??
[/PYTHON]
[ANSWER]
assert f(17) == 17
[/ANSWER]

[PYTHON]
def f(s):
    return s + "a"
assert f("x9j") == ??
[/PYTHON]
[ANSWER]
assert f("x9j") == "x9ja"
[/ANSWER]

[PYTHON]
{code}
assert f({input}) == ??
[/PYTHON]
[ANSWER]
"""  # noqa: E501 - CRUXEval's prompts.py, verbatim

INPUT_PROMPT = """You will be given a function f and an output in the form f(??) == output. Find any input such that executing f on the input leads to the given output. There may be multiple answers, but you should only output one. In [ANSWER] and [/ANSWER] tags, complete the assertion with one such input that will produce the output when executing the function.

[PYTHON]
def f(my_list):
    count = 0
    for i in my_list:
        if len(i) % 2 == 0:
            count += 1
    return count
assert f(??) == 3
[/PYTHON]
[ANSWER]
assert f(["mq", "px", "zy"]) == 3
[/ANSWER]

[PYTHON]
def f(s1, s2):
    return s1 + s2
assert f(??) == "banana"
[/PYTHON]
[ANSWER]
assert f("ba", "nana") == "banana"
[/ANSWER]

[PYTHON]
{code}
assert f(??) == {output}
[/PYTHON]
[ANSWER]
"""  # noqa: E501 - CRUXEval's prompts.py, verbatim


def chat_turns(prompt: str) -> tuple[str, list[tuple[str, str]]]:
    """A direct prompt's instruction (answer in a ```python block) and its exemplars as (question, answer) turns."""
    instruction = re.sub(r"\b([Ii]n) \[ANSWER\] and \[/ANSWER\] tags", r"\1 a ```python code block",
                         prompt.split("\n\n[PYTHON]")[0])
    shots = re.findall(r"\[PYTHON\]\n(.*?)\n\[/PYTHON\]\n\[ANSWER\]\n(.*?)\n\[/ANSWER\]", prompt, re.S)
    fenced = _instruct.fenced
    return instruction, [(fenced(code, "python"), fenced(answer, "python")) for code, answer in shots]


def chat_answer(completion: str) -> str:
    """The assertion of a chat answer: the last `assert` line of its fenced block, else the whole block."""
    block = _instruct.code_of("python", completion)
    asserts = [line.strip() for line in block.splitlines() if line.strip().startswith("assert")]
    return asserts[-1] if asserts else block


class CRUXEval(Task):
    uses_sandbox = True
    supports_chat = True
    options = {"timeout": timeout_option(TIMEOUT_S, "3 s (CRUXEval's check_correctness)")}
    mode: str  # "output" or "input"

    def docs(self) -> list[dict]:
        rows, self.provenance = load_rows(self.data, self.name, local="cruxeval/cruxeval.jsonl",
                                          hub=[HubSplit("cruxeval-org/cruxeval", "test")],
                                          fields={"id": str, "code": str, "input": str, "output": str}, unique="id")
        return [{**row, "task_id": row["id"]} for row in rows]

    def request(self, doc: dict) -> GenerationRequest:
        if self.mode == "output":
            prompt = OUTPUT_PROMPT.format(code=doc["code"], input=doc["input"])
        else:
            prompt = INPUT_PROMPT.format(code=doc["code"], output=doc["output"])
        reference = f"assert f({doc['input']}) == {doc['output']}\n"
        if self.chat:  # the instruction opens the first turn; the exemplars are turns answered in ```python blocks
            instruction, shots = chat_turns(OUTPUT_PROMPT if self.mode == "output" else INPUT_PROMPT)
            question = "\n".join(prompt.rsplit("[PYTHON]\n", 1)[1].split("\n")[:-3])  # code and the ?? assertion
            shots[0] = (f"{instruction}\n\n{shots[0][0]}", shots[0][1])
            return _instruct.chat_request(doc["task_id"], _instruct.turns(shots, _instruct.fenced(question, "python")),
                                          _instruct.fence_prefix("python"), _instruct.STOP, 256,
                                          reference.strip() + _instruct.CLOSING_FENCE)
        return GenerationRequest(doc["task_id"], prompt, STOP, 256, reference=reference)

    def extract(self, completion: str) -> str:
        """CRUXEval's postprocess_generation for the direct prompts, after its cut at the stop word [/ANSWER]."""
        completion = truncate_at_stop(completion, STOP)
        if self.mode == "output":
            if "==" in completion:
                completion = completion.split("==")[1].strip()
            return completion.strip()
        if "==" in completion:
            completion = completion.split("==")[0].strip()
        if "assert" in completion:
            completion = completion.split("assert")[1].strip()
        return completion.strip()

    def score(self, doc: dict, completion: str, sandbox) -> Scored:
        prediction = self.extract(chat_answer(completion) if self.chat else completion)
        if self.mode == "output" and f"f({doc['input']})" in prediction:
            return Scored("failed", answer=prediction, error="the predicted output contains the call "
                                                             f"f({doc['input']}) itself")
        if self.mode == "input" and "f(" not in prediction:
            return Scored("failed", answer=prediction, error="the predicted input is not a call f(...)")
        source = harness.python_tests(doc["code"], equal=(doc["output"], prediction), entry_points=["f"])
        scored = run_scored(sandbox, languages.python().tests(source, self.option("timeout")), source.shown)
        scored.answer = prediction
        return scored

    def aggregate(self, records: Sequence[dict], sampling: SamplingParams) -> dict:
        out = super().aggregate(records, sampling)
        published = {"n": sampling.n, "temperature": sampling.temperature, "top_p": sampling.top_p}
        out["published_setting"] = published == PUBLISHED_SAMPLING
        return out

    def settings(self) -> dict:
        chat = {
            "prompt": f"chat: CRUXEval make_direct_{self.mode}_prompt's instruction (answer in a ```python code "
                      "block instead of [ANSWER] tags) and first exemplar as the first user turn, the exemplars' "
                      "answers as fenced assistant turns, then the code and assertion in a fenced block",
            "response_prefix": _instruct.fence_prefix("python"),
            "stop": list(_instruct.STOP),
            "extraction": "the last assert line of the first fenced block of response prefix + completion, then "
                          "as in the completion variant",
        } if self.chat else {}
        return {
            "prompt": f"CRUXEval make_direct_{self.mode}_prompt (2-shot), verbatim",
            "stop": list(STOP),
            "extraction": "CRUXEval's postprocess_generation: " + (
                "the text after the first '=='" if self.mode == "output"
                else "the text before the first '==', after 'assert'"),
            "checker": "code; then output == (prediction), the prediction parsed as one expression, in evalkit's "
                       "Python test harness; " + ("predictions containing f(<input>) fail" if self.mode == "output"
                                                  else "predictions without 'f(' fail"),
            "published_sampling": PUBLISHED_SAMPLING,
            "run": languages.python().describe() | {"timeout_s_per_command": self.option("timeout")},
            "reference_timeout_s": TIMEOUT_S,
            "reference_scorer": "CRUXEval evaluate_score",
            "deliberate_differences": DELIBERATE_DIFFERENCES,
        } | chat

    def environment(self, sandbox) -> dict:
        return languages.toolchain_environment(sandbox, languages.python())


@register("cruxeval-o")
class CRUXEvalOutput(CRUXEval):
    name = "cruxeval-o"
    mode = "output"


@register("cruxeval-i")
class CRUXEvalInput(CRUXEval):
    name = "cruxeval-i"
    mode = "input"
