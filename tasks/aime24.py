"""AIME 2024 (I and II, 30 problems): zero-shot boxed prompt, answers judged as MATH's (math-verify; 025 == 25)."""

from __future__ import annotations

from collections.abc import Sequence

from evalkit.data import HubSplit, check_fields, load_rows
from evalkit.math_equivalence import exact_number
from evalkit.requests import SamplingParams
from evalkit.tasks import TaskError, register
from tasks.math import MathAnswerTask

HUB_REPO = "Maxwell-Jia/AIME_2024"  # fields ID, Problem, Solution, Answer


def as_integer(answer: str) -> int | None:
    """`025`, `25`, `$25$`, `25.0` -> 25; anything that is not a whole number -> None."""
    value = exact_number(answer)
    return int(value) if value is not None and value.denominator == 1 else None


@register("aime24")
class AIME24(MathAnswerTask):
    name = "aime24"
    prompt_variants = ("boxed",)
    max_tokens_by_prompt = {"boxed": 4096}

    def docs(self) -> list[dict]:
        rows, self.provenance = load_rows(self.data, self.name, local="aime24/test.jsonl",
                                          hub=[HubSplit(HUB_REPO, "train")])
        if self.provenance.get("source") == "hub":
            rows = [{"id": r.get("ID"), "problem": r.get("Problem"), "solution": r.get("Solution"),
                     "answer": str(r.get("Answer"))} for r in rows]
        docs = []
        for i, row in enumerate(rows):
            check_fields(row, {"id": (str, int), "problem": str, "answer": (str, int)}, f"aime24 row {i}")
            if as_integer(str(row["answer"])) is None:
                raise TaskError(f"aime24 row {i}: the answer {row['answer']!r} is not an integer")
            docs.append({"task_id": str(row["id"]), "problem": row["problem"], "solution": row.get("solution") or "",
                         "answer": str(row["answer"])})
        if len({d["task_id"] for d in docs}) != len(docs):
            raise TaskError("aime24: the data repeats a problem id")
        return docs

    def aggregate(self, records: Sequence[dict], sampling: SamplingParams) -> dict:
        out = super().aggregate(records, sampling)
        problems = len({r["task_id"] for r in records})
        # AIME is usually quoted as problems solved out of 30 (a mean over samples with --n-samples K).
        out["solved"] = {name: f"{value * problems:g}/{problems}" for name, value in out["metrics"].items()}
        return out
