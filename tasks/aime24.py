"""AIME 2024 (I and II, 30 problems): zero-shot boxed prompt, answers compared as integers."""

from __future__ import annotations

from collections.abc import Sequence

from evalkit.data import file_provenance, hub_rows, read_jsonl
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
    prompt_variant = "boxed"
    max_tokens_by_prompt = {"boxed": 4096}

    def docs(self) -> list[dict]:
        path = self.data.local("aime24/test.jsonl")
        if path is None:
            rows, self.provenance = hub_rows(HUB_REPO, "train", revision=self.data.revision)
            rows = [{"id": r["ID"], "problem": r["Problem"], "solution": r["Solution"], "answer": str(r["Answer"])}
                    for r in rows]
        else:
            rows = [row for _, row in read_jsonl(path)]
            self.provenance = file_provenance(path)
        docs = []
        for i, row in enumerate(rows):
            if not all(k in row for k in ("id", "problem", "answer")) or as_integer(str(row["answer"])) is None:
                raise TaskError(f"aime24 row {i}: needs id, problem and an integer answer")
            docs.append({"task_id": str(row["id"]), "problem": row["problem"], "solution": row.get("solution", ""),
                         "answer": str(row["answer"])})
        return docs

    def judge(self, gold: str, answer: str) -> tuple[bool | None, str]:
        value = as_integer(answer)
        return value is not None and value == as_integer(gold), "integer"

    def aggregate(self, records: Sequence[dict], sampling: SamplingParams) -> dict:
        out = super().aggregate(records, sampling)
        problems = len({r["task_id"] for r in records})
        # AIME is usually quoted as problems solved out of 30 (a mean over samples with --samples K).
        out["solved"] = {name: f"{value * problems:g}/{problems}" for name, value in out["metrics"].items()}
        return out

    def settings(self) -> dict:
        return super().settings() | {"checker": "integer equality of the extracted answer (\"025\" == 25)"}
