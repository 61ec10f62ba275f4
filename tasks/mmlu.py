"""MMLU (14042 test questions, 57 subjects): 5-shot from dev, scored by the log-likelihood of " A".." D"."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from evalkit.data import check_fields, file_provenance, hub_rows
from evalkit.metrics import mean_stderr
from evalkit.requests import LoglikelihoodRequest, SamplingParams
from evalkit.tasks import Scored, Task, TaskError, register
from tasks import _prompts

CONTINUATIONS = tuple(f" {letter}" for letter in _prompts.MMLU_LETTERS)


def _read_csv_rows(path: Path) -> list[dict]:
    """Rows of the mirror's CSVs (question, choice0..3, answer index). The csv module keeps the literal
    "None" answers that pandas would turn into NaN."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for i, row in enumerate(rows):
        check_fields(row, dict.fromkeys(("question", "choice0", "choice1", "choice2", "choice3", "answer"), str),
                     f"{path} row {i}")
        if row["answer"] not in ("0", "1", "2", "3"):
            raise TaskError(f"{path} row {i}: answer {row['answer']!r} is not an index 0-3")
        out.append({"question": row["question"], "choices": [row[f"choice{k}"] for k in range(4)],
                    "answer": int(row["answer"])})
    return out


@register("mmlu")
class MMLU(Task):
    name = "mmlu"
    kind = "loglikelihood"
    shots = 5  # the published setting; a silent 0-shot default is a known trap elsewhere

    def _load(self) -> tuple[dict[str, list[dict]], dict[str, list[dict]]]:
        """(test rows, dev rows) by subject."""
        test_dir = self.data.local("mmlu/test")
        if test_dir is None:
            by_split = {}
            self.provenance = {"source": "hub", "repo": "cais/mmlu", "splits": {}}
            for split in ("test", "dev"):
                rows, self.provenance["splits"][split] = hub_rows("cais/mmlu", split, "all", self.data.revision)
                grouped = defaultdict(list)
                for row in rows:
                    grouped[row["subject"]].append({k: row[k] for k in ("question", "choices", "answer")})
                by_split[split] = dict(grouped)
            return by_split["test"], by_split["dev"]
        dev_dir = self.data.local("mmlu/dev")
        test_files = sorted(test_dir.glob("*_test.csv"))
        subjects = [p.name.removesuffix("_test.csv") for p in test_files]
        dev_files = [dev_dir / f"{s}_dev.csv" for s in subjects]
        if missing := [p.name for p in dev_files if not p.exists()]:
            raise TaskError(f"{dev_dir} lacks the few-shot files {', '.join(missing)}")
        self.provenance = file_provenance(*test_files, *dev_files)
        return ({s: _read_csv_rows(p) for s, p in zip(subjects, test_files, strict=True)},
                {s: _read_csv_rows(p) for s, p in zip(subjects, dev_files, strict=True)})

    def docs(self) -> list[dict]:
        test, dev = self._load()
        if not test:
            raise TaskError("mmlu: no test questions found")
        docs = []
        for subject in sorted(test):
            shots = dev.get(subject, [])[: self.shots]
            if len(shots) < self.shots:
                raise TaskError(f"mmlu {subject}: {self.shots} shots wanted, the dev split has {len(shots)}")
            for i, row in enumerate(test[subject]):
                docs.append({"task_id": f"mmlu/{subject}/{i}", "subject": subject, "shots": shots, **row})
        return docs

    def request(self, doc: dict) -> LoglikelihoodRequest:
        context = _prompts.mmlu_prompt(doc["subject"], doc["shots"], doc["question"], doc["choices"])
        return LoglikelihoodRequest(doc["task_id"], context, CONTINUATIONS, reference=doc["answer"])

    def score(self, doc: dict, output: list[float], sandbox=None) -> Scored:
        extra = {"subject": doc["subject"], "gold": _prompts.MMLU_LETTERS[doc["answer"]]}
        # As lm-eval's argmax: -inf (a choice the model cannot produce) ranks last and the question is scored.
        # NaN and +inf are no log-probabilities: the backend failed, so the sample is an error, never a guess.
        if len(output) != len(CONTINUATIONS) or any(math.isnan(x) or x == math.inf for x in output):
            return Scored("error", error=f"expected 4 log-likelihoods (finite or -inf), got {output!r}", extra=extra)
        best = max(range(len(output)), key=lambda k: output[k])  # first maximum, as numpy's argmax
        return Scored("passed" if best == doc["answer"] else "failed", answer=_prompts.MMLU_LETTERS[best], extra=extra)

    def aggregate(self, records: Sequence[dict], sampling: SamplingParams) -> dict:
        by_subject: dict[str, list[float]] = defaultdict(list)
        for r in records:
            # a sample the harness could not judge has no extra: its id names the subject
            subject = r["extra"].get("subject") or r["task_id"].split("/")[1]
            by_subject[subject].append(float(r["verdict"] == "passed"))
        per_subject = {}
        for subject, values in sorted(by_subject.items()):
            acc, se = mean_stderr(values)
            per_subject[subject] = {"acc": acc, "stderr": se, "n": len(values)}
        micro, micro_se = mean_stderr([v for values in by_subject.values() for v in values])
        macro = sum(s["acc"] for s in per_subject.values()) / len(per_subject)
        # Subjects are independent samples, so the variance of an equal-weight mean adds up in closed form.
        macro_se = math.sqrt(sum(s["stderr"] ** 2 for s in per_subject.values())) / len(per_subject)
        return {
            "metrics": {"acc": micro, "acc_macro": macro},
            "stderr": {"acc": micro_se, "acc_macro": macro_se},
            "stderr_method": {
                "acc": "closed form: std of per-question correctness / sqrt(questions)",
                "acc_macro": "closed form: sqrt(sum of per-subject stderr^2) / subjects",
            },
            "averaging": {"acc": "micro: over questions (subjects weighted by size)",
                          "acc_macro": "macro: over subjects"},
            "per_subject": per_subject,
        }

    def settings(self) -> dict:
        return {
            "prompt": "'The following are multiple choice questions (with answers) about {subject}.' + shots + "
                      "'{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:'",
            "shots": self.shots,
            "shots_source": _prompts.MMLU_SOURCE,
            "continuations": list(CONTINUATIONS),
            "scoring": "argmax of the continuations' log-likelihoods (first maximum on ties), unnormalised; "
                       "-inf ranks last; NaN or +inf is an error",
            "reference": "lm-eval 0.4 mmlu (acc = argmax == gold); equal on every sample with finite or -inf values",
        }
