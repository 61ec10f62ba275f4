"""GSM8K (1319 test problems): 8-shot chain of thought, greedy; lm-eval's strict-match and flexible-extract.

`strict_match` and `flexible_extract` are lm-eval gsm8k_cot's metrics of the same names, sample for sample:
its regexes, its first/last match, its exact_match (commas, `$`, a closing period ignored, any case).
`numeric_match` is evalkit's lenient reading beside them: the first "The answer is N" or "#### N" (a `$`
and spaces allowed), compared as numbers (18.00 == 18), for models that state the answer right but not
in the exemplars' exact shape.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from evalkit.answer_extraction import (
    GSM8K_EXACT_MATCH_IGNORE,
    GSM8K_FLEXIBLE_EXTRACT_RE,
    GSM8K_STRICT_MATCH_RE,
    gsm8k_exact_match_key,
    gsm8k_flexible_extract,
    gsm8k_stated_answer,
    gsm8k_strict_match,
    parse_number,
)
from evalkit.data import HubSplit, load_rows
from evalkit.metrics import accuracy_metrics
from evalkit.requests import GenerationRequest, SamplingParams
from evalkit.tasks import Scored, Task, TaskError, register
from tasks import _instruct, _prompts

_CALCULATOR_RE = re.compile(r"<<[^>]*>>")  # the dataset's calculator annotations, <<48/2=24>>


def same_number(a: str | None, b: str | None) -> bool:
    """Numeric equality after removing commas, `$` and a trailing period ("1,000." == "1000")."""
    x, y = (parse_number(a) if a else None), (parse_number(b) if b else None)
    return x is not None and y is not None and abs(x - y) <= 1e-9 * max(1.0, abs(x))


def same_exact_match(a: str | None, b: str | None) -> bool:
    """lm-eval's exact_match on two extracted answers (None: lm-eval's "[invalid]", which matches no gold)."""
    return a is not None and b is not None and gsm8k_exact_match_key(a) == gsm8k_exact_match_key(b)


# metric -> (extract the answer, compare it with the gold); the verdict is the first one's.
METRICS = {
    "strict_match": (gsm8k_strict_match, same_exact_match),
    "flexible_extract": (gsm8k_flexible_extract, same_exact_match),
    "numeric_match": (gsm8k_stated_answer, same_number),
}


def reference_completion(answer: str) -> str:
    """The dataset's worked answer as the exemplars write it: plain reasoning, then "The answer is N."."""
    reasoning, final = answer.rsplit("####", 1)
    lines = [line.strip() for line in _CALCULATOR_RE.sub("", reasoning).splitlines() if line.strip()]
    return " " + " ".join(lines + [f"The answer is {final.strip()}."])


@register("gsm8k")
class GSM8K(Task):
    name = "gsm8k"
    supports_chat = True

    def docs(self) -> list[dict]:
        rows, self.provenance = load_rows(self.data, self.name, local="gsm8k/test.jsonl",
                                          hub=[HubSplit("openai/gsm8k", "test", "main")],
                                          fields={"question": str, "answer": str})
        docs = []
        for i, row in enumerate(rows):
            if "####" not in row["answer"] or parse_number(row["answer"].split("####")[-1]) is None:
                raise TaskError(f"gsm8k row {i}: the answer does not end in '#### <number>'")
            docs.append({"task_id": f"gsm8k/{i}", "question": row["question"], "solution": row["answer"],
                         "answer": row["answer"].split("####")[-1].strip()})
        return docs

    def request(self, doc: dict) -> GenerationRequest:
        if self.chat:  # the eight exemplars as turns; the answer is read as in the completion variant
            messages = _instruct.turns(_prompts.GSM8K_COT_EXEMPLARS, doc["question"])
            return _instruct.chat_request(doc["task_id"], messages, "", _prompts.GSM8K_COT_STOP,
                                          self.default_max_tokens, reference_completion(doc["solution"]).strip())
        return GenerationRequest(doc["task_id"], _prompts.gsm8k_cot_prompt(doc["question"]), _prompts.GSM8K_COT_STOP,
                                 self.default_max_tokens, reference=reference_completion(doc["solution"]))

    def score(self, doc: dict, output: str, sandbox=None) -> Scored:
        extra: dict = {"gold": doc["answer"]}
        for name, (extract, same) in METRICS.items():
            answer = extract(output)
            extra[name] = {"answer": answer, "passed": same(answer, doc["answer"])}
        strict = extra["strict_match"]
        # The record's verdict is strict-match; the other metrics are reported beside it from `extra`.
        return Scored("passed" if strict["passed"] else "failed", answer=strict["answer"], extra=extra)

    def aggregate(self, records: Sequence[dict], sampling: SamplingParams) -> dict:
        out: dict = {"metrics": {}, "stderr": {}, "stderr_method": {}}
        for name, (_, same) in METRICS.items():
            part = accuracy_metrics(records, sampling.n, name, lambda r, k=name: bool(_judged(r, k).get("passed")),
                                    lambda r, k=name: _judged(r, k).get("answer"), same)
            for key in out:
                out[key].update(part[key])
        return out

    def settings(self) -> dict:
        chat = {"prompt": "chat: the 8 exemplars as user (question) / assistant (worked answer ending 'The answer is "
                          "N.') turns, then the question as the last user turn; no system prompt, no response prefix"
                } if self.chat else {}
        return {
            "prompt": "8-shot chain of thought: 'Q: ...\\nA: ... The answer is N.' blocks, then 'Q: {question}\\nA:'",
            "shots": len(_prompts.GSM8K_COT_EXEMPLARS),
            "prompt_source": _prompts.GSM8K_COT_SOURCE,
            "stop": list(_prompts.GSM8K_COT_STOP),
            "max_tokens": self.default_max_tokens,
            "decoding": "greedy (temperature 0) for the published setting",
            "extraction": {
                "strict_match": f"lm-eval gsm8k_cot strict-match: first match of {GSM8K_STRICT_MATCH_RE.pattern!r}",
                "flexible_extract": f"lm-eval gsm8k_cot flexible-extract: last match of "
                                    f"{GSM8K_FLEXIBLE_EXTRACT_RE.pattern!r}",
                "numeric_match": "evalkit: first 'The answer is N' or '#### N', '$' and spaces allowed",
            },
            "checker": {
                "strict_match": "lm-eval exact_match: strings equal after removing "
                                f"{list(GSM8K_EXACT_MATCH_IGNORE)} (regexes), ignoring case",
                "flexible_extract": "the same as strict_match",
                "numeric_match": "numeric equality after removing commas, '$' and a trailing period",
            },
            "reference": "lm-eval 0.4 gsm8k_cot: strict_match and flexible_extract equal its metrics on every sample",
            "majority_vote": "strict_match and flexible_extract: equal exact_match strings; numeric_match: numbers",
            "verdict": "strict_match (the other metrics are in each record's extra)",
        } | chat


def _judged(record: dict, metric: str) -> dict:
    """A record's verdict under `metric`; empty for a sample the harness could not judge (verdict "error")."""
    return record["extra"].get(metric) or {}
