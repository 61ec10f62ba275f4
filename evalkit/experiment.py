"""When two runs measured the same thing: one definition, used by resume, report, compare and gate.

A run's config (results.json `config`, run.json `config`) is flattened into keys such as
`tasks.humaneval.settings.stop` or `sampling.temperature`. Three kinds of keys:

- identity: which model ran (`model`, the backend's name, path, weights hash, tokenizer). A resume must
  keep them; a report or gate compares different models by design, so there they may differ.
- provenance: where and with what the run happened (`packages`, `git`, `sandbox`). They never decide whether
  runs are the same experiment; reports show them.
- everything else moves scores: the dataset, prompts, stop sequences, checker, limits, sampling, and how the
  backend ran the model (dtype, device). Runs that differ in one of them are different experiments.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

PROVENANCE_SECTIONS = ("packages", "git", "sandbox")
IDENTITY_SECTIONS = ("model",)
# The chat format belongs to the model (each checkpoint has its own); whether a task was prompted through it is
# the task's `chat` option, which does count.
BACKEND_IDENTITY = ("name", "model", "path", "file", "sha256", "config_sha256", "arch", "tokenizer", "base_url",
                    "served_model", "server", "chat_format")
# Gate: recorded facts that may differ without making two runs incomparable; reported as notes. The seed only
# picks which random samples are drawn; problem sets are compared sample by sample, so `limit` adds nothing.
GATE_TOLERATED = ("environment.", "sampling.seed", "limit")


def flatten(value: object, prefix: str = "") -> dict[str, object]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    if isinstance(value, dict) and value:
        out: dict[str, object] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def normalize_dataset(dataset: dict) -> dict:
    """Dataset provenance without local paths: the same file read from two folders is the same data."""
    out = dict(dataset)
    if isinstance(out.get("files"), dict):
        out["files"] = sorted(out["files"].values())  # the sha256 digests
    return out


def task_settings(config: dict, task: str) -> dict[str, object]:
    """Everything recorded about `task` that moves its score, flattened: dataset revision, prompt and
    checker settings, generation limits, sampling, problem limit and the sandbox toolchain."""
    info = config.get("tasks", {}).get(task, {})
    sampling = dict(config.get("sampling", {}))
    if info.get("kind") == "loglikelihood":
        sampling = {}  # log-likelihood tasks draw no samples
    out = {"limit": config.get("limit")}
    out.update(flatten({"sampling": sampling}))
    for key, value in info.items():
        if key == "dataset" and isinstance(value, dict):
            value = normalize_dataset(value)
        out.update(flatten({key: value}))
    return out


def experiment_settings(config: dict, include_identity: bool) -> dict[str, object]:
    """The whole config flattened, local paths normalised away; the model's identity only if asked for."""
    out: dict[str, object] = {}
    for section, value in config.items():
        if section in IDENTITY_SECTIONS and not include_identity:
            continue
        if section == "backend" and isinstance(value, dict) and not include_identity:
            how = {k: v for k, v in value.items() if k not in BACKEND_IDENTITY}
            out.update(flatten({section: how}) if how else {})
        elif section == "tasks" and isinstance(value, dict):
            for task in value:
                out.update({f"tasks.{task}.{k}": v for k, v in task_settings(config, task).items()
                            if not k.startswith(("sampling.", "limit"))})
        else:
            out.update(flatten({section: value}))
    return out


def moves_scores(key: str) -> bool:
    """Whether a setting can change scores (as opposed to where or with what the run happened)."""
    return not key.startswith(PROVENANCE_SECTIONS)


def _same(x: object, y: object) -> bool:
    return json.dumps(x, sort_keys=True, default=str) == json.dumps(y, sort_keys=True, default=str)


def differing_settings(configs: Sequence[dict], include_identity: bool = False) -> dict[str, list[object]]:
    """Settings (flattened keys) whose value is not the same in every config; absent keys read as None."""
    flat = [experiment_settings(c, include_identity) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    return {k: [f.get(k) for f in flat] for k in keys if any(not _same(f.get(k), flat[0].get(k)) for f in flat)}


def same_experiment(a: dict, b: dict, include_identity: bool = True) -> list[str]:
    """[] when configs `a` and `b` describe the same experiment, else the score-moving keys that differ.

    With `include_identity` (resume, merge of shards) the model must be the same too; without it (report,
    gate) two models evaluated the same way are the same experiment.
    """
    return [k for k in differing_settings([a, b], include_identity) if moves_scores(k)]
