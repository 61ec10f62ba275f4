"""MATH (Hendrycks et al., 5000 test problems) and MATH-500: Minerva 4-shot or zero-shot boxed prompts."""

from __future__ import annotations

from collections.abc import Sequence

from evalkit.answer_extraction import extract_math_answer, last_boxed
from evalkit.data import HubSplit, load_rows
from evalkit.math_equivalence import DEFAULT_TIMEOUT_S, answers_equivalent
from evalkit.metrics import accuracy_metrics
from evalkit.requests import GenerationRequest, SamplingParams
from evalkit.tasks import Scored, Task, TaskError, register
from tasks import _instruct, _prompts

HUB_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                "prealgebra", "precalculus")  # EleutherAI/hendrycks_math configs
EXTRACTION = ("math-verify's order: Minerva's 'final answer is X. I hope it is correct'; then the later of the "
              "last balanced \\boxed{} (or \\fbox) and 'final answer is X'; then the later of the last math span "
              "($..$, \\(..\\), \\[..\\], bare \\frac{a}{b}) and the last number after a space or '='")
CHECKER = ("normalised string match, then exact number match (both accept only what math-verify accepts), then "
           "math-verify (parse + verify of '$\\boxed{answer}$') in a worker process under a per-check wall-clock "
           "limit; over the limit -> verdict 'timeout'")
REFERENCE = ("math-verify, as lm-eval's minerva_math500 calls it; deliberate difference: a final answer stated "
             "without $...$ is read whole (math-verify reads no LaTeX there, or only the leading number)")


class MathAnswerTask(Task):
    """A problem with one final answer, judged by answer equivalence. Subclasses load the rows."""

    prompt_variants = ("minerva", "boxed")
    supports_chat = True
    max_tokens_by_prompt = {"minerva": 1024, "boxed": 2048}

    def __init__(self, data, prompt: str | None = None, chat: bool = False, **options) -> None:
        # The instruct variant is the boxed instruction, unless --prompt minerva asks for the exemplars as turns.
        super().__init__(data, prompt=prompt or ("boxed" if chat else None), chat=chat, **options)

    def request(self, doc: dict) -> GenerationRequest:
        if self.prompt_variant == "minerva":
            prompt, stop = _prompts.minerva_prompt(doc["problem"]), _prompts.MINERVA_STOP
            reference = _prompts.minerva_completion(doc["solution"], doc["answer"])
        else:
            prompt, stop = _prompts.boxed_prompt(doc["problem"]), ()
            reference = doc["solution"]
            if last_boxed(reference) != doc["answer"]:  # e.g. AIME solutions box other things, or nothing
                reference += f"\n\nThe final answer is $\\boxed{{{doc['answer']}}}$."
        max_tokens = self.max_tokens_by_prompt[self.prompt_variant]
        if self.chat:
            if self.prompt_variant == "minerva":
                messages = _instruct.turns(_prompts.MINERVA_EXEMPLARS, doc["problem"])
            else:
                messages = _instruct.turns((), f"{doc['problem']}\n{_prompts.BOXED_INSTRUCTION}")
            return _instruct.chat_request(doc["task_id"], messages, "", stop, max_tokens, reference.strip())
        return GenerationRequest(doc["task_id"], prompt, stop, max_tokens, reference)

    def judge(self, gold: str, answer: str) -> tuple[bool | None, str]:
        """(equal, how decided); equal is None when the check timed out."""
        eq = answers_equivalent(gold, answer)
        return (None if eq.method == "timeout" else eq.equal), eq.method

    def score(self, doc: dict, output: str, sandbox=None) -> Scored:
        answer, found_by = extract_math_answer(output)
        extra = {"gold": doc["answer"], "extraction": found_by}
        if answer is None:
            return Scored("failed", answer=None, error="no answer found", extra=extra)
        equal, extra["check"] = self.judge(doc["answer"], answer)
        if equal is None:
            return Scored("timeout", answer=answer, error="equivalence check timed out", extra=extra)
        return Scored("passed" if equal else "failed", answer=answer, extra=extra)

    def aggregate(self, records: Sequence[dict], sampling: SamplingParams) -> dict:
        return accuracy_metrics(records, sampling.n, "accuracy", lambda r: r["verdict"] == "passed",
                                lambda r: r["answer"], lambda a, b: self.judge(a, b)[0] is True)

    def settings(self) -> dict:
        boxed = self.prompt_variant == "boxed"
        chat = {"prompt": "chat: " + ("the problem, a newline and the instruction as one user turn" if boxed else
                                      "the 4 exemplars as user (problem) / assistant (solution) turns, then the "
                                      "problem") + "; no system prompt, no response prefix"} if self.chat else {}
        return {
            "prompt": self.prompt_variant,
            "shots": 0 if boxed else len(_prompts.MINERVA_EXEMPLARS),
            "prompt_source": _prompts.BOXED_SOURCE if boxed else _prompts.MINERVA_SOURCE,
            "instruction": _prompts.BOXED_INSTRUCTION if boxed else None,
            "stop": [] if boxed else list(_prompts.MINERVA_STOP),
            "max_tokens": self.max_tokens_by_prompt[self.prompt_variant],
            "extraction": EXTRACTION,
            "checker": CHECKER,
            "reference": REFERENCE,
            "check_timeout_s": DEFAULT_TIMEOUT_S,
            "majority_vote": "over equivalence classes of extracted answers (same checker)",
        } | chat


@register("math")
class Math(MathAnswerTask):
    name = "math"

    def docs(self) -> list[dict]:
        hub = [HubSplit("EleutherAI/hendrycks_math", "test", subject) for subject in HUB_SUBJECTS]
        rows, self.provenance = load_rows(self.data, self.name, local="math/test.jsonl", hub=hub,
                                          fields={"problem": str, "solution": str})
        local = self.provenance.get("source") == "local"
        docs = []
        for i, row in enumerate(rows):
            task_id = f"math/{row.get('idx', i) if local else i}"
            gold = last_boxed(row["solution"])  # this copy has no answer field
            if gold is None:
                raise TaskError(f"math {task_id}: the solution has no \\boxed{{}} answer")
            docs.append({"task_id": task_id, "problem": row["problem"], "solution": row["solution"],
                         "answer": gold, "subject": row.get("type"), "level": row.get("level")})
        return docs


@register("math500")
class Math500(MathAnswerTask):
    name = "math500"

    def docs(self) -> list[dict]:
        rows, self.provenance = load_rows(
            self.data, self.name, local="math/math500_test.jsonl", hub=[HubSplit("HuggingFaceH4/MATH-500", "test")],
            fields={"problem": str, "solution": str, "answer": str, "unique_id": str}, unique="unique_id")
        return [{"task_id": row["unique_id"], "problem": row["problem"], "solution": row["solution"],
                 "answer": row["answer"], "subject": row.get("subject"), "level": row.get("level")} for row in rows]
