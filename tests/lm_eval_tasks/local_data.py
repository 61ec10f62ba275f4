"""Datasets of the local lm-eval tasks, read from the JSON lines files beside this module (never the hub).

lm-eval resolves `!function local_data.NAME` relative to the YAML file, so the tasks work from any working
directory; it calls NAME(**metadata, **dataset_kwargs).
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets

DATA = Path(__file__).parent / "data"


def _test_split(name: str) -> datasets.DatasetDict:
    lines = (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return datasets.DatasetDict({"test": datasets.Dataset.from_list([json.loads(line) for line in lines])})


def multiple_choice(**_: object) -> datasets.DatasetDict:
    return _test_split("mc")


def generation(**_: object) -> datasets.DatasetDict:
    return _test_split("gen")


def perplexity(**_: object) -> datasets.DatasetDict:
    return _test_split("ppl")
