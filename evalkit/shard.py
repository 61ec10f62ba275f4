"""Which shard a problem belongs to: a stable hash of (task, task id), so every launcher agrees without talking.

`evalkit run --shard K/N` evaluates the problems of shard K (0 <= K < N) into its own run folder; `evalkit
merge` puts the shards back together (`evalkit.merge`). The hash depends on nothing but the task name and
the problem id, so a problem lands in the same shard on every machine, in every Python process and after
every retry; shards are about equal in size, not exactly equal.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from evalkit.errors import EvalkitError


class ShardError(EvalkitError, ValueError):
    """A shard specification that cannot be read, or shards that cannot be merged."""


def shard_of(task: str, task_id: str, count: int) -> int:
    """The shard (0..count-1) of problem `task_id` of `task`: sha256("task/task_id") modulo count."""
    digest = hashlib.sha256(f"{task}/{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based, as Slurm's SLURM_ARRAY_TASK_ID with --array=0-{count-1})."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ShardError(f"shard {self.index}/{self.count} does not exist: write K/N with 0 <= K < N")

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise ShardError(f"cannot read --shard {text!r}: write K/N, e.g. 0/4 for the first of four shards")
        return cls(int(match.group(1)), int(match.group(2)))

    def holds(self, task: str, task_id: str) -> bool:
        return shard_of(task, task_id, self.count) == self.index

    @property
    def folder_name(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
