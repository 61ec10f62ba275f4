"""Comparing evalkit's verdicts with a reference scorer's, sample for sample (used by the agreement tests).

Each replayed sample carries a tag: None where evalkit must agree with the reference, or the name of one of
the task's DELIBERATE_DIFFERENCES where it is known to differ. Every disagreement must be tagged, every tag
must name a listed difference, and every tagged sample must in fact disagree (so the list is exercised).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    label: str
    ours: bool
    reference: bool
    tag: str | None = None


def assert_agreement(samples: Sequence[Sample], differences: Mapping[str, str], minimum: int = 24) -> None:
    untagged = [(s.label, s.ours, s.reference) for s in samples if s.tag is None and s.ours != s.reference]
    unknown = [(s.label, s.tag) for s in samples if s.tag is not None and s.tag not in differences]
    agreeing = [(s.label, s.tag) for s in samples if s.tag is not None and s.ours == s.reference]
    assert not untagged, f"verdicts differ from the reference on samples no listed difference explains: {untagged}"
    assert not unknown, f"tags that are not listed deliberate differences: {unknown}"
    assert not agreeing, f"samples tagged as a difference that agree with the reference: {agreeing}"
    assert len(samples) >= minimum
    assert any(s.reference for s in samples) and any(not s.reference for s in samples)
