"""MATH (Hendrycks et al., 5000 test problems) and MATH-500: Minerva 4-shot or zero-shot boxed prompts."""

from __future__ import annotations

from collections.abc import Sequence

from evalkit.answer_extraction import extract_math_answer, last_boxed
from evalkit.data import file_provenance, hub_rows, read_jsonl, require_fields
from evalkit.math_equivalence import DEFAULT_TIMEOUT_S, answers_equivalent
from evalkit.metrics import accuracy_metrics
from evalkit.requests import GenerationRequest, SamplingParams
from evalkit.tasks import Scored, Task, TaskError, register
from tasks import _prompts

HUB_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                "prealgebra", "precalculus")  # EleutherAI/hendrycks_math configs
PROMPT_VARIANTS = ("minerva", "boxed")
EXTRACTION = "last balanced \\boxed{} (or \\fbox), then 'final answer is ...', then the last number"
CHECKER = ("normalised string match, then exact number match, then math-verify (parse + verify) in a "
           "worker process under a per-check wall-clock limit; over the limit -> verdict 'timeout'")


class MathAnswerTask(Task):
    """A problem with one final answer, judged by answer equivalence. Subclasses load the rows."""

    prompt_variants: tuple[str, ...] = PROMPT_VARIANTS
    prompt_variant: str = "minerva"  # set by `evalkit run --prompt`
    max_tokens_by_prompt = {"minerva": 1024, "boxed": 2048}

    def request(self, doc: dict) -> GenerationRequest:
        if self.prompt_variant not in self.prompt_variants:
            raise TaskError(f"{self.name}: unknown prompt variant {self.prompt_variant!r}; "
                            f"choose one of {', '.join(self.prompt_variants)}")
        if self.prompt_variant == "minerva":
            prompt, stop = _prompts.minerva_prompt(doc["problem"]), _prompts.MINERVA_STOP
            reference = _prompts.minerva_completion(doc["solution"], doc["answer"])
        else:
            prompt, stop = _prompts.boxed_prompt(doc["problem"]), ()
            reference = doc["solution"]
            if last_boxed(reference) != doc["answer"]:  # e.g. AIME solutions box other things, or nothing
                reference += f"\n\nThe final answer is $\\boxed{{{doc['answer']}}}$."
        max_tokens = self.max_tokens_by_prompt[self.prompt_variant]
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
        return {
            "prompt": self.prompt_variant,
            "shots": 0 if boxed else len(_prompts.MINERVA_EXEMPLARS),
            "prompt_source": _prompts.BOXED_SOURCE if boxed else _prompts.MINERVA_SOURCE,
            "instruction": _prompts.BOXED_INSTRUCTION if boxed else None,
            "stop": [] if boxed else list(_prompts.MINERVA_STOP),
            "max_tokens": self.max_tokens_by_prompt[self.prompt_variant],
            "extraction": EXTRACTION,
            "checker": CHECKER,
            "check_timeout_s": DEFAULT_TIMEOUT_S,
            "majority_vote": "over equivalence classes of extracted answers (same checker)",
        }


@register("math")
class Math(MathAnswerTask):
    name = "math"

    def docs(self) -> list[dict]:
        path = self.data.local("math/test.jsonl")
        if path is None:
            rows, self.provenance = [], {"source": "hub", "repo": "EleutherAI/hendrycks_math", "configs": {}}
            for subject in HUB_SUBJECTS:
                part, prov = hub_rows("EleutherAI/hendrycks_math", "test", subject, self.data.revision)
                rows += part
                self.provenance["configs"][subject] = prov
            numbered = [(f"math/{i}", row) for i, row in enumerate(rows)]
        else:
            rows = [row for _, row in read_jsonl(path)]
            self.provenance = file_provenance(path)
            numbered = [(f"math/{row.get('idx', i)}", row) for i, row in enumerate(rows)]
        docs = []
        for task_id, row in numbered:
            require_fields(row, ("problem", "solution"), f"math {task_id}")
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
        path = self.data.local("math/math500_test.jsonl")
        if path is None:
            rows, self.provenance = hub_rows("HuggingFaceH4/MATH-500", "test", revision=self.data.revision)
        else:
            rows = [row for _, row in read_jsonl(path)]
            self.provenance = file_provenance(path)
        for i, row in enumerate(rows):
            require_fields(row, ("problem", "solution", "answer", "unique_id"), f"math500 row {i}")
        return [{"task_id": row["unique_id"], "problem": row["problem"], "solution": row["solution"],
                 "answer": row["answer"], "subject": row.get("subject"), "level": row.get("level")} for row in rows]
