"""What `evalkit serve` puts behind the HTTP API: an engine per kind of model.

- NativeEngine: evalkit's own PyTorch models. One worker thread owns the model; generation requests that
  wait together run as one `generate_batch` call, whose continuous batching lets finished sequences leave
  and waiting ones join. Each HTTP sample is seeded with the request's `seed` (the n samples of one request
  with seed, seed+1, ...), so a client that sends `sample_seed(run seed, task, index)` gets exactly what the
  in-process backend draws.
- KnownAnswersEngine: `reference` and `replay:FILE` with `--tasks`: a prompt of a served task gets its
  reference or replayed answer, and a log-likelihood prompt the backend's scores, so the whole HTTP path can
  be tested without weights. Its tokenizer is one token per character (after a BOS).
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import random
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from evalkit.backends.base import Backend
from evalkit.errors import EvalkitError
from evalkit.requests import ChatMessage, GenerationRequest, LoglikelihoodRequest, SamplingParams, sample_seed
from evalkit.sanitize import truncate_at_stop

T = TypeVar("T")
SEED_MOD = 2**63


class RequestError(EvalkitError, ValueError):
    """A request the served model cannot answer as asked; the client gets a 400 with this message."""


@dataclass(frozen=True)
class Sampling:
    """What one HTTP request asks for."""

    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None
    n: int

    def seeds(self) -> list[int]:
        base = random.getrandbits(63) if self.seed is None else self.seed
        return [(base + k) % SEED_MOD for k in range(self.n)]


@dataclass(frozen=True)
class Generated:
    """One choice: text after the prompt (cut before the stop string), its token ids where known."""

    text: str
    finish_reason: str  # "stop" or "length"
    completion_tokens: int
    token_ids: list[int] | None = None
    prompt_tokens: int | None = None  # where the engine rendered the prompt itself (chat)


@dataclass(frozen=True)
class TokenLogprobs:
    """Per prompt position: log p(token | the tokens before it) (None at position 0) and the top alternatives."""

    chosen: list[float | None]
    top: list[list[tuple[int, float]] | None]


class ModelWorker:
    """One thread runs everything that touches the model, in arrival order; the generation jobs that are
    waiting when it looks (with the same temperature and top_p) go to the model together.

    Before a batch starts it lingers while jobs keep arriving (`linger_s` after the last one, at most
    `max_linger_s`): the clients answered by the previous batch send their next requests a few milliseconds
    later, and without the wait they would always miss the next batch (16 clients then settle into two
    alternating batches of 8).
    """

    def __init__(self, generate: Callable[[list[Any], float, float], list[Any]], linger_s: float = 0.01,
                 max_linger_s: float = 0.05):
        self._generate = generate
        self.linger_s, self.max_linger_s = linger_s, max_linger_s
        self.jobs_per_call: Counter[int] = Counter()  # how many jobs each model call batched together
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="evalkit-model", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()
        self._queue.put(("call", fn, future))
        return future

    def submit_generation(self, job: Any, temperature: float, top_p: float) -> Future:
        future: Future = Future()
        self._queue.put(("generate", (job, temperature, top_p), future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            items, stop = [item], False
            deadline = time.monotonic() + self.max_linger_s
            while True:
                generating = any(kind == "generate" for kind, _, _ in items)
                wait = min(self.linger_s, deadline - time.monotonic()) if generating else 0.0
                try:
                    more = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                items.append(more)
            groups: dict[tuple[float, float], list[tuple[Any, Future]]] = {}
            for kind, payload, future in items:
                if not future.set_running_or_notify_cancel():
                    continue
                if kind == "generate":
                    job, temperature, top_p = payload
                    groups.setdefault((temperature, top_p), []).append((job, future))
                else:
                    _settle(future, payload)
            for (temperature, top_p), group in groups.items():
                self.jobs_per_call[len(group)] += 1
                try:
                    results = self._generate([job for job, _ in group], temperature, top_p)
                except Exception as e:  # the requests fail, the server goes on
                    for _, future in group:
                        future.set_exception(e)
                else:
                    for (_, future), result in zip(group, results, strict=True):
                        future.set_result(result)
            if stop:
                return


def _settle(future: Future, fn: Callable[[], Any]) -> None:
    try:
        future.set_result(fn())
    except Exception as e:
        future.set_exception(e)


class Engine(ABC):
    """A served model: tokenization, sampled continuations, prompt log-probabilities and chat."""

    def __init__(self, name: str, backend: Backend):
        self.name = name
        self.backend = backend

    vocab_size: int

    @abstractmethod
    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    @abstractmethod
    def detokenize(self, ids: Sequence[int]) -> str: ...

    @abstractmethod
    def token_strings(self, ids: Sequence[int]) -> list[str]:
        """One string per token whose concatenation reads as the decoded text."""

    @abstractmethod
    async def complete(self, prompt_ids: list[int], sampling: Sampling) -> list[Generated]: ...

    @abstractmethod
    async def logprobs(self, sequences: list[list[int]], prompt_lens: list[int], top: int) -> list[TokenLogprobs]:
        """Per sequence, the log-probabilities of its tokens after the first (a prompt of `prompt_lens[i]` tokens,
        then generated ones) and the `top` most likely tokens at each position."""

    @abstractmethod
    async def chat(self, messages: Sequence[ChatMessage], response_prefix: str, sampling: Sampling) -> list[Generated]:
        ...

    def describe(self) -> dict:
        return self.backend.describe()

    def close(self) -> None:
        self.backend.close()


class NativeEngine(Engine):
    """evalkit's own models: the native backend's model and tokenizer, batched by a ModelWorker."""

    def __init__(self, name: str, backend: Backend):
        from evalkit.backends.native import NativeBackend

        if not isinstance(backend, NativeBackend):
            raise TypeError(f"NativeEngine serves the native backend, not {backend.name}")
        super().__init__(name, backend)
        self.native = backend
        self.tokenizer = backend.tokenizer
        self.vocab_size = backend.tokenizer.vocab_size
        self.worker = ModelWorker(self._generate_batch)

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, bos=add_special_tokens)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [self.tokenizer.decode_continuation(ids[:i], ids[i : i + 1]) for i in range(len(ids))]

    def _generate_batch(self, jobs: list, temperature: float, top_p: float) -> list:
        from evalkit.models.generate import generate_batch

        return generate_batch(self.native.model, jobs, decode=self.tokenizer.decode_continuation,
                              eos_id=self.tokenizer.eos_id, temperature=temperature, top_p=top_p,
                              batch_size=self.native.batch_size)

    async def complete(self, prompt_ids: list[int], sampling: Sampling) -> list[Generated]:
        from evalkit.models.generate import GenerationJob

        job = GenerationJob(prompt_ids=prompt_ids, max_new_tokens=sampling.max_tokens, seeds=sampling.seeds(),
                            stop=sampling.stop)
        done = await asyncio.wrap_future(self.worker.submit_generation(job, sampling.temperature, sampling.top_p))
        return [Generated(truncate_at_stop(c.text, sampling.stop), c.finish_reason, c.n_tokens,
                          list(c.ids)) for c in done]

    async def logprobs(self, sequences: list[list[int]], prompt_lens: list[int], top: int) -> list[TokenLogprobs]:
        return await asyncio.wrap_future(self.worker.submit(lambda: self._score(sequences, top)))

    def _score(self, sequences: list[list[int]], top: int) -> list[TokenLogprobs]:
        """Log-probabilities of every token of every sequence. Their common prefix (an MMLU question's context,
        shared by its four answers) is run once, its state forked for the rest of each sequence."""
        import torch

        model = self.native.model
        shared = min(len(s) for s in sequences)
        for s in sequences[1:]:
            shared = next((i for i in range(shared) if s[i] != sequences[0][i]), shared)
        if shared == 0:  # nothing in common (token-id prompts need not start with BOS): one by one
            return [scored for s in sequences for scored in self._score([s], top)]
        with torch.inference_mode():
            cache = model.new_cache(1)
            prefix = torch.tensor([sequences[0][:shared]], dtype=torch.long, device=model.device)
            prefix_logp = torch.log_softmax(model.forward_cached(prefix, cache)[0].float(), dim=-1)  # (shared, vocab)
            rest = [i for i, s in enumerate(sequences) if len(s) > shared + 1]
            rest_logp: dict[int, torch.Tensor] = {}
            if rest:
                width = max(len(sequences[i]) - shared - 1 for i in rest)
                inputs = torch.zeros(len(rest), width, dtype=torch.long)
                for row, i in enumerate(rest):
                    tail = sequences[i][shared:-1]
                    inputs[row, : len(tail)] = torch.tensor(tail, dtype=torch.long)
                forked = cache.select(torch.zeros(len(rest), dtype=torch.long, device=model.device))
                logits = model.forward_cached(inputs.to(model.device), forked).float()
                for row, i in enumerate(rest):  # right padding only changes positions after the sequence's end
                    rest_logp[i] = torch.log_softmax(logits[row, : len(sequences[i]) - shared - 1], dim=-1)
            # what every sequence shares is looked up once: row k of prefix_logp predicts token k + 1
            head = torch.tensor(sequences[0][1:shared], dtype=torch.long, device=prefix_logp.device)
            head_chosen = prefix_logp[: shared - 1].gather(-1, head.unsqueeze(-1)).squeeze(-1).tolist()
            head_top = _top(prefix_logp[: shared - 1], top)
            out = []
            for i, s in enumerate(sequences):
                chosen, tops = list(head_chosen), list(head_top)
                if len(s) > shared:  # the last shared row predicts this sequence's first own token
                    chosen.append(float(prefix_logp[shared - 1, s[shared]]))
                    tops += _top(prefix_logp[shared - 1 : shared], top)
                if i in rest_logp:
                    own = torch.tensor(s[shared + 1 :], dtype=torch.long, device=rest_logp[i].device)
                    chosen += rest_logp[i].gather(-1, own.unsqueeze(-1)).squeeze(-1).tolist()
                    tops += _top(rest_logp[i], top)
                out.append(TokenLogprobs([None, *chosen], [None, *tops]))
        return out

    async def chat(self, messages: Sequence[ChatMessage], response_prefix: str, sampling: Sampling) -> list[Generated]:
        # The backend renders the messages with the model's chat format; its samples are seeded by
        # sample_seed(request seed, "chat", i).
        request = GenerationRequest(task_id="chat", prompt="", stop=sampling.stop, max_tokens=sampling.max_tokens,
                                    messages=tuple(messages), response_prefix=response_prefix,
                                    sample_indices=tuple(range(sampling.n)))
        params = SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                seed=sampling.seeds()[0])
        done = await asyncio.wrap_future(self.worker.submit(lambda: self.native.generate([request], params)[0]))
        return [Generated(c.text, "length" if c.finish_reason == "length" else "stop",
                          int(c.info.get("completion_tokens") or 0), prompt_tokens=c.info.get("prompt_tokens"))
                for c in done]

    def close(self) -> None:
        self.worker.close()
        super().close()


def _top(logp, k: int) -> list[list[tuple[int, float]]]:
    """The k most likely (token, log-probability) of each row."""
    if k <= 0 or logp.shape[0] == 0:
        return [[] for _ in range(logp.shape[0])]
    values, indices = logp.topk(min(k, logp.shape[-1]), dim=-1)
    return [list(zip(i, v, strict=True)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]


@dataclass
class PromptIndex:
    """The requests of the served tasks, found by what a client sends for them."""

    tasks: list[str]
    prompts: dict[str, GenerationRequest] = dataclasses.field(default_factory=dict)
    chats: dict[tuple, GenerationRequest] = dataclasses.field(default_factory=dict)
    contexts: set[str] = dataclasses.field(default_factory=set)
    continuations: dict[str, tuple[LoglikelihoodRequest, int]] = dataclasses.field(default_factory=dict)
    known_ids: dict[str, set[str]] = dataclasses.field(default_factory=dict)

    @classmethod
    def build(cls, names: Sequence[str], data, prompt=None, task_options=None) -> PromptIndex:
        """Index every request of `names`, in completion and (where a task has one) chat form."""
        from evalkit.tasks import build_tasks, task_class

        index = cls(list(names))
        plain = build_tasks(names, data, prompt, False, task_options or {})
        chat_names = [n for n in names if task_class(n).supports_chat]
        chat_prompt = {k: v for k, v in prompt.items() if k in chat_names} if isinstance(prompt, dict) else prompt
        chat = build_tasks(chat_names, data, chat_prompt or None, True, task_options or {}) if chat_names else {}
        for tasks in (plain, chat):
            for name, task in tasks.items():
                docs = task.docs()
                index.known_ids[name] = {d["task_id"] for d in docs}
                for doc in docs:
                    index.add(task.request(doc))
        return index

    def add(self, request: GenerationRequest | LoglikelihoodRequest) -> None:
        if isinstance(request, LoglikelihoodRequest):
            self.contexts.add(request.context.rstrip())
            for i, continuation in enumerate(request.continuations):
                self.continuations.setdefault(request.context + continuation, (request, i))
        elif request.chat:
            self.chats.setdefault(chat_key(request.messages, request.response_prefix), request)
        else:
            self.prompts.setdefault(request.prompt, request)


def chat_key(messages: Sequence[ChatMessage], response_prefix: str) -> tuple:
    return tuple((m.role, m.content) for m in messages), response_prefix


class KnownAnswersEngine(Engine):
    """`reference` or `replay:FILE` behind HTTP, for the served tasks' prompts.

    A replay file may hold several samples per problem: the sample asked for is the index i whose
    sample_seed(run seed, task id, i) is the request's seed, as evalkit run sends it (`run_seed` must be
    the client's --seed). Answers are whole, whatever max_tokens says (as in-process).
    """

    BOS, EOS, OFFSET = 1, 2, 3

    def __init__(self, name: str, backend: Backend, index: PromptIndex, run_seed: int = 1234):
        super().__init__(name, backend)
        self.index = index
        self.run_seed = run_seed
        self.vocab_size = 0x110000 + self.OFFSET
        self.worker = ModelWorker(lambda jobs, temperature, top_p: [])  # serializes backend calls

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [self.BOS] * add_special_tokens + [ord(c) + self.OFFSET for c in text]

    def detokenize(self, ids: Sequence[int]) -> str:
        return "".join(chr(i - self.OFFSET) for i in ids if i >= self.OFFSET)

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [self.detokenize([i]) for i in ids]

    def _unknown(self, what: str) -> RequestError:
        return RequestError(f"{what} is not one of the prompts of the served tasks ({', '.join(self.index.tasks)}); "
                            f"the {self.backend.name} model answers only those")

    def _indices(self, request: GenerationRequest, sampling: Sampling) -> tuple[int, ...]:
        per_problem = self.backend.samples_per_problem
        if per_problem is None:  # the reference: every sample is the same answer
            return tuple(range(sampling.n))
        first = 0
        if sampling.seed is not None:
            match = [i for i in range(per_problem) if sample_seed(self.run_seed, request.task_id, i) == sampling.seed]
            if match:
                first = match[0]
            elif per_problem > 1:
                raise RequestError(f"seed {sampling.seed} is none of the {per_problem} samples of {request.task_id} "
                                   f"for run seed {self.run_seed} (evalkit serve --seed must be the client's --seed)")
        if first + sampling.n > per_problem:
            raise RequestError(f"{request.task_id} has {per_problem} samples; "
                               f"asked for {first}..{first + sampling.n - 1}")
        return tuple(range(first, first + sampling.n))

    async def _answer(self, request: GenerationRequest, sampling: Sampling) -> list[Generated]:
        indices = self._indices(request, sampling)
        asked = dataclasses.replace(request, sample_indices=indices)
        params = SamplingParams(n=len(indices), temperature=sampling.temperature, top_p=sampling.top_p)
        done = await asyncio.wrap_future(self.worker.submit(lambda: self.backend.generate([asked], params)[0]))
        out = []
        for c in done:
            text = truncate_at_stop(c.text, sampling.stop)
            out.append(Generated(text, "stop", len(text), self.tokenize(text, add_special_tokens=False)))
        return out

    async def complete(self, prompt_ids: list[int], sampling: Sampling) -> list[Generated]:
        text = self.detokenize(prompt_ids)
        request = self.index.prompts.get(text)
        if request is None:
            raise self._unknown(f"the prompt {text[:60]!r}...")
        return await self._answer(request, sampling)

    async def chat(self, messages: Sequence[ChatMessage], response_prefix: str, sampling: Sampling) -> list[Generated]:
        request = self.index.chats.get(chat_key(messages, response_prefix))
        if request is None:
            raise self._unknown("the conversation")
        return await self._answer(request, sampling)

    async def logprobs(self, sequences: list[list[int]], prompt_lens: list[int], top: int) -> list[TokenLogprobs]:
        return [await self._logprobs(ids, n, top) for ids, n in zip(sequences, prompt_lens, strict=True)]

    async def _logprobs(self, ids: list[int], prompt_len: int, top: int) -> TokenLogprobs:
        """The backend's score of a known continuation on the prompt's last token, 0 on the others; a known
        context (or generation prompt) alone gets zeros."""
        text = self.detokenize(ids[:prompt_len])
        chosen: list[float | None] = [None] + [0.0] * (len(ids) - 1)
        if text in self.index.continuations:
            request, i = self.index.continuations[text]
            scores = await asyncio.wrap_future(self.worker.submit(lambda: self.backend.loglikelihood([request])[0]))
            if not isinstance(scores, list):
                raise RequestError(f"the {self.backend.name} model could not score {request.task_id}: {scores.error}")
            chosen[prompt_len - 1] = float(scores[i])
        elif text not in self.index.contexts and text not in self.index.prompts:
            raise self._unknown(f"the prompt {text[:60]!r}...")
        tops: list[list[tuple[int, float]] | None] = [None] + [
            [(t, v)] if top > 0 else [] for t, v in zip(ids[1:], chosen[1:], strict=True)]
        return TokenLogprobs(chosen, tops)

    def close(self) -> None:
        self.worker.close()
        super().close()
