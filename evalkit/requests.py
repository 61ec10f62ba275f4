"""What a task asks of a backend, and what comes back: the only types that cross the task/backend boundary."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation, for tasks in chat (instruct) mode."""

    role: Role
    content: str


@dataclass(frozen=True)
class GenerationRequest:
    """Continue `prompt` until a stop sequence or `max_tokens` new tokens; draw the samples `sample_indices`.

    In chat mode (`messages` non-empty) the backend renders `messages` with the model's chat format instead of
    sending `prompt` (which is then only a readable rendering for the records), and the assistant's answer
    starts with `response_prefix`, which the backend puts in the model's mouth. A completion is always the
    text that follows what the model was given: it never repeats the prompt or the response prefix.

    `reference` is what a perfect model would write; only the `reference` backend reads it.
    Sample i is drawn with `sample_seed(sampling.seed, task_id, i)`, so asking for samples (3, 4) alone
    draws what a request for (0, 1, 2, 3, 4) would have drawn at those indices.
    """

    task_id: str
    prompt: str
    stop: tuple[str, ...] = ()
    max_tokens: int = 512
    reference: str | None = None
    messages: tuple[ChatMessage, ...] = ()
    response_prefix: str = ""
    sample_indices: tuple[int, ...] = (0,)

    @property
    def chat(self) -> bool:
        return bool(self.messages)

    def with_system_prompt(self, text: str) -> GenerationRequest:
        """This chat request with `text` as its system message, first; the readable prompt says so too."""
        if not self.chat or self.messages[0].role == "system":
            raise ValueError("a system prompt goes first in a chat request that has none")
        messages = (ChatMessage("system", text), *self.messages)
        return replace(self, messages=messages, prompt=readable_conversation(messages, self.response_prefix))


def readable_conversation(messages: tuple[ChatMessage, ...] | list[ChatMessage], response_prefix: str = "") -> str:
    """A conversation as plain text for the records (the backend renders it in the model's own format)."""
    turns = "".join(f"<|{m.role}|>\n{m.content}\n" for m in messages)
    return f"{turns}<|assistant|>\n{response_prefix}"


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score each continuation of `context`; the backend returns one log-probability per continuation.

    `reference` is the index of the gold continuation; only the `reference` backend reads it.
    """

    task_id: str
    context: str
    continuations: tuple[str, ...]
    reference: int | None = None


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Completion:
    """One sample a backend produced for a GenerationRequest.

    `error` set means the backend could not produce this sample for reasons outside the model (a server that
    kept failing, a lost connection): the sample is recorded with verdict "error", never scored as a wrong
    answer, and `--resume` asks for it again. `finish_reason` is "stop" (a stop sequence or end of sequence)
    or "length" (max_tokens), when the backend knows it. `info` holds per-sample facts worth recording
    (token counts, attempts, latency, the rendered prompt's size).
    """

    text: str
    finish_reason: FinishReason | None = None
    error: str | None = None
    info: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Failure:
    """A log-likelihood request the backend could not serve for reasons outside the model (see Completion.error)."""

    error: str
    info: dict = field(default_factory=dict, compare=False)


Scores = list[float] | Failure  # what a backend returns for one LoglikelihoodRequest


@dataclass(frozen=True)
class SamplingParams:
    """How many samples per prompt and how to draw them. Temperature 0 means greedy."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 1234

    def as_dict(self) -> dict:
        return {"n": self.n, "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}


def sample_seed(seed: int, task_id: str, index: int) -> int:
    """A per-sample seed that depends only on the run seed, the problem and the sample index.

    Backends seed each sample with it, so a resumed, sharded or re-batched run draws the same samples.
    """
    digest = hashlib.sha256(f"{seed}:{task_id}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF
