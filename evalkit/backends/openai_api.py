"""The `openai:BASE_URL` backend: a model behind an OpenAI-compatible server (vLLM, SGLang, evalkit serve, ...).

What it sends is decided here, never by the server's defaults (16 tokens, temperature 1, a checkpoint's
generation config): every request carries `max_tokens`, `temperature`, `top_p`, `stop` and a per-sample
`seed = sample_seed(run seed, task id, sample index)`, one request per sample (`n` in one request only with
`n_per_request`, which checks the count that comes back).

Failures: connection errors, timeouts, 408, 409, 429 and 5xx are retried a bounded number of times with
exponential backoff and jitter, waiting what `Retry-After` says where the server sends it; a request that
still fails becomes an "error" sample (never an empty completion scored as wrong) that `--resume` asks for
again. Any other 4xx means the request itself is wrong: it stops the run with the server's message.

Log-likelihoods (MMLU) use `/v1/completions` with `echo` and `logprobs` and `max_tokens=0`: the server
returns the log-probability of every prompt token. Context and continuation are split as the native
backend splits them (`evalkit.backends.native.encode_pair`: trailing context spaces join the continuation,
the continuation is what follows the context's own token count in the whole text's tokens). Where the
server has vLLM's `/tokenize`, the prompts go out as token ids, with the one BOS its tokenizer adds; else as
text, with the context alone sent in the same request to count its tokens.

The API key comes from EVALKIT_API_KEY or OPENAI_API_KEY and is never recorded.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import os
import queue
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from evalkit.backends.base import Backend, BackendError, GreedyScorer
from evalkit.chat import ChatFormat, hf_chat_format, mistral_chat_format
from evalkit.requests import (
    Completion,
    Failure,
    GenerationRequest,
    LoglikelihoodRequest,
    SamplingParams,
    Scores,
    sample_seed,
)
from evalkit.sanitize import truncate_at_stop

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 429})  # and every 5xx
MAX_RETRY_AFTER_S = 120.0  # a Retry-After longer than this is waited for this long (the openai client's cap)
# Default per-request timeout: a fixed allowance plus a floor of 4 generated tokens per second, so that 512
# tokens get 188 s (a 7B model on CPU decodes about 2-5 tokens/s; vLLM on a GPU 30-100 per sequence).
TIMEOUT_BASE_S = 60.0
TIMEOUT_PER_TOKEN_S = 0.25
LOGLIKELIHOOD_TIMEOUT_S = 120.0
CONNECT_TIMEOUT_S = 10.0
FINISH_REASONS = {"stop": "stop", "length": "length"}
# A token's echoed log-probability and the same value among the top ones may differ in the last printed digits.
GREEDY_TOLERANCE = 1e-6


class _Refused(Exception):
    """The server answered 4xx (not 408/409/429): the request is wrong and retrying cannot help."""

    def __init__(self, status: int, message: str, path: str):
        super().__init__(message)
        self.status, self.message, self.path = status, message, path


@dataclass
class _Answer:
    body: dict
    attempts: int
    latency_s: float  # from the first try to the answer, retries and waits included
    waited_s: float  # time spent waiting between tries (backoff or Retry-After)


@dataclass
class _GaveUp:
    error: str
    attempts: int
    waited_s: float

    def info(self, earlier_attempts: int = 0) -> dict:
        return {"attempts": earlier_attempts + self.attempts, "retry_wait_s": round(self.waited_s, 4)}


def redact_url(url: str) -> str:
    """The URL without user:password@ or a query string (where keys hide), for the records."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def api_key_from_env() -> str | None:
    return os.environ.get("EVALKIT_API_KEY") or os.environ.get("OPENAI_API_KEY") or None


def retry_after_s(response: httpx.Response) -> float | None:
    """Seconds the server asks to wait (Retry-After: seconds or an HTTP date; retry-after-ms), capped."""
    value = response.headers.get("retry-after-ms")
    if value:
        try:
            return min(max(float(value) / 1000, 0.0), MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value.strip() else None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S) if math.isfinite(seconds) else None


def server_message(response: httpx.Response) -> str:
    """The error message in an OpenAI ({"error": {"message"}}), vLLM or FastAPI ({"detail"}) error body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])
    return str(body)[:500]


def load_chat_format(name: str) -> ChatFormat:
    """evalkit's renderer of chat prompts: mistral-v1 / mistral-v3 (mistral-common) or hf:PATH (a transformers
    tokenizer's chat template)."""
    if name.startswith("hf:"):
        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(name.removeprefix("hf:"))
        except (ImportError, OSError, ValueError) as e:
            raise BackendError(f"--chat-format {name}: cannot load the tokenizer: {e}") from e
        return hf_chat_format(tokenizer, name.removeprefix("hf:"))
    if name.startswith("mistral-"):
        return mistral_chat_format(name.removeprefix("mistral-"))
    raise BackendError(f"unknown --chat-format {name!r}: mistral-v1, mistral-v3 or hf:PATH_OR_REPO")


class OpenAIBackend(Backend, GreedyScorer):
    """Generation through /v1/completions or /v1/chat/completions, log-likelihood through echoed logprobs."""

    name = "openai"
    options = frozenset({"served_model", "concurrency", "request_timeout", "max_retries", "n_per_request",
                         "chat_format", "max_stop_sequences"})

    @classmethod
    def from_spec(cls, target: str, known_ids: dict[str, set[str]] | None = None, **options) -> OpenAIBackend:
        return cls(target, **options)

    def __init__(
        self,
        base_url: str,
        served_model: str | None = None,
        concurrency: int = 8,
        request_timeout: float | None = None,
        max_retries: int = 6,
        n_per_request: bool = False,
        chat_format: str | None = None,
        max_stop_sequences: int | None = None,
        *,
        backoff_s: tuple[float, float] = (1.0, 30.0),
        use_token_ids: bool | None = None,
    ) -> None:
        """`backoff_s` is (first wait, longest wait) between retries; `use_token_ids` None asks the server
        whether it tokenizes (/tokenize), True or False forces the log-likelihood prompt form. `chat_format`
        (mistral-v1, mistral-v3, hf:PATH) renders chat prompts here and sends their ids to /v1/completions;
        None leaves the chat template to the server (/v1/chat/completions). `max_stop_sequences` caps the stop
        strings sent (OpenAI's hosted API takes 4); all of them are applied to the returned text either way."""
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(f"--model openai:{redact_url(base_url)}: expected openai:http(s)://HOST[:PORT]/v1, "
                               "e.g. openai:http://127.0.0.1:8000/v1")
        if concurrency < 1 or max_retries < 0 or (request_timeout is not None and request_timeout <= 0):
            raise BackendError("--concurrency must be >= 1, --max-retries >= 0 and --request-timeout > 0")
        if max_stop_sequences is not None and max_stop_sequences < 1:
            raise BackendError("--max-stop-sequences must be >= 1")
        self.base_url = base_url.strip().rstrip("/")
        self.public_url = redact_url(self.base_url)
        # vLLM serves /tokenize and /version beside /v1, not under it
        self.root_url = self.base_url.removesuffix("/v1")
        self.concurrency = concurrency
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self.n_per_request = n_per_request
        self.max_stop_sequences = max_stop_sequences
        self.backoff_s = backoff_s
        self.local_chat_format = load_chat_format(chat_format) if chat_format else None
        key = api_key_from_env()
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.served_model, self.server = self._run(self._discover(served_model))
        self.use_token_ids = self._run(self._probe_tokenize()) if use_token_ids is None else use_token_ids

    # --- the interface -------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingParams) -> list[list[Completion]]:
        got: list[dict[int, Completion]] = [{} for _ in requests]
        for position, produced in self.generate_stream(requests, sampling):
            got[position].update(produced)
        return [[got[r][i] for i in request.sample_indices] for r, request in enumerate(requests)]

    def generate_stream(self, requests: Sequence[GenerationRequest],
                        sampling: SamplingParams) -> Iterator[tuple[int, dict[int, Completion]]]:
        """Each HTTP request's samples as soon as its answer is in, so the runner logs them while others are in
        flight: an interrupt or a dead server loses only the requests in flight."""
        calls: list[tuple[int, tuple[int, ...]]] = []  # (request number, sample indices of one HTTP request)
        for r, request in enumerate(requests):
            if self.n_per_request:
                calls.append((r, tuple(request.sample_indices)))
            else:
                calls.extend((r, (i,)) for i in request.sample_indices)

        def one(call: tuple[int, tuple[int, ...]]) -> Callable[[httpx.AsyncClient], Awaitable[list[Completion]]]:
            request, indices = requests[call[0]], call[1]
            return lambda client: self._generate_one(client, request, indices, sampling)

        for k, completions in self._as_finished([one(c) for c in calls]):
            yield calls[k][0], dict(zip(calls[k][1], completions, strict=True))

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Scores]:
        return [got if isinstance(got, Failure) else [logp for logp, _ in got]
                for got in self.loglikelihood_greedy(requests)]

    def loglikelihood_greedy(
        self, requests: Sequence[LoglikelihoodRequest]
    ) -> list[list[tuple[float, bool | None]] | Failure]:
        def one(request: LoglikelihoodRequest) -> Callable[[httpx.AsyncClient], Awaitable]:
            return lambda client: self._loglikelihood_one(client, request)

        return self._run(self._gather([one(r) for r in requests]))

    def chat_format(self) -> ChatFormat | None:
        """evalkit's own rendering (`--chat-format`), or None when the server's template renders chat prompts."""
        return self.local_chat_format

    def describe(self) -> dict:
        seed = ("sample_seed(sampling.seed, task_id, first sample index), n = missing samples" if self.n_per_request
                else "sample_seed(sampling.seed, task_id, sample_index), n = 1")
        return {
            "name": self.name,
            "base_url": self.public_url,
            "served_model": self.served_model,
            "server": self.server,
            "requests": {
                "generation": "/v1/completions with the task's prompt; max_tokens and stop from the task, "
                              f"temperature and top_p from sampling, seed = {seed}"
                              + (f"; stop sends the task's first {self.max_stop_sequences} stop strings, and all "
                                 "of them are applied to the returned text" if self.max_stop_sequences else ""),
                "chat": "/v1/completions with the token ids of evalkit's rendering (chat_format)"
                        if self.local_chat_format is not None else
                        "/v1/chat/completions with the task's messages, rendered by the server's template; a "
                        "response prefix as a final assistant message with continue_final_message=true, "
                        "add_generation_prompt=false",
                "loglikelihood": "/v1/completions, echo=true, logprobs=1, max_tokens=0, prompts as "
                                 + ("token ids from the server's /tokenize" if self.use_token_ids
                                    else "text (the context alone in the same request counts its tokens)"),
            },
            **({"chat_format": self.local_chat_format.describe()} if self.local_chat_format is not None else {}),
        }

    # --- one request ------------------------------------------------------------------------------------

    async def _generate_one(self, client: httpx.AsyncClient, request: GenerationRequest, indices: tuple[int, ...],
                            sampling: SamplingParams) -> list[Completion]:
        prompt_record: dict[str, Any] = {}
        params: dict[str, Any] = {
            "model": self.served_model,
            "max_tokens": request.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            # a server that takes few stop strings gets the first ones; the text is cut at every one below
            "stop": list(request.stop)[:self.max_stop_sequences] or None,
            "seed": sample_seed(sampling.seed, request.task_id, indices[0]),
            "n": len(indices),
        }
        if request.chat and self.local_chat_format is not None:  # evalkit renders; the server continues the ids as sent
            rendered = self.local_chat_format.render(request.messages, request.response_prefix)
            path, params = "/completions", {**params, "prompt": list(rendered.ids)}
            prompt_record = rendered.record()
        elif request.chat:
            messages = [{"role": m.role, "content": m.content} for m in request.messages]
            if request.response_prefix:
                messages.append({"role": "assistant", "content": request.response_prefix})
                params.update(continue_final_message=True, add_generation_prompt=False)
            path, params = "/chat/completions", {**params, "messages": messages}
        else:
            path, params = "/completions", {**params, "prompt": request.prompt}
        timeout = self.request_timeout or TIMEOUT_BASE_S + TIMEOUT_PER_TOKEN_S * request.max_tokens
        answer = await self._post(client, self.base_url + path, params, timeout)
        if isinstance(answer, _GaveUp):
            return [Completion("", error=answer.error, info=answer.info()) for _ in indices]
        choices = sorted(answer.body.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != len(indices):
            raise BackendError(f"{self.public_url}{path} returned {len(choices)} choices for n={len(indices)}"
                               + ("; it ignores `n`: run without --n-per-request" if self.n_per_request else ""))
        usage = answer.body.get("usage") or {}
        out = []
        for choice in choices:
            text = choice.get("text") if path == "/completions" else (choice.get("message") or {}).get("content")
            raw_finish = choice.get("finish_reason")
            info = {"attempts": answer.attempts, "latency_s": round(answer.latency_s, 4),
                    "retry_wait_s": round(answer.waited_s, 4), **prompt_record,
                    "prompt_tokens": usage.get("prompt_tokens"),
                    "completion_tokens" if len(indices) == 1 else "completion_tokens_all_choices":
                        usage.get("completion_tokens")}
            if answer.body.get("system_fingerprint"):
                info["system_fingerprint"] = answer.body["system_fingerprint"]
            if raw_finish not in FINISH_REASONS:
                info["server_finish_reason"] = raw_finish
            if not isinstance(text, str):
                out.append(Completion("", error=f"the server returned no text (finish_reason {raw_finish!r})",
                                      info=info))
            else:
                cut = truncate_at_stop(text, request.stop)
                out.append(Completion(cut, "stop" if cut != text else FINISH_REASONS.get(raw_finish), info=info))
        return out

    async def _loglikelihood_one(self, client: httpx.AsyncClient,
                                 request: LoglikelihoodRequest) -> list[tuple[float, bool | None]] | Failure:
        context = request.context.rstrip()  # trailing spaces belong to the continuation (encode_pair)
        wholes = [request.context + c for c in request.continuations]
        attempts = 0
        if self.use_token_ids:
            token_lists = []
            for text in [context, *wholes]:
                got = await self._post(client, self.root_url + "/tokenize",
                                       {"model": self.served_model, "prompt": text, "add_special_tokens": True},
                                       LOGLIKELIHOOD_TIMEOUT_S)
                if isinstance(got, _GaveUp):
                    return Failure(got.error, got.info(attempts))
                attempts += got.attempts
                tokens = got.body.get("tokens")
                if not isinstance(tokens, list):
                    raise BackendError(f"{self.root_url}/tokenize answered without a `tokens` list")
                token_lists.append(tokens)
            n_context, prompts = len(token_lists[0]), token_lists[1:]
            lengths = [len(t) for t in prompts]
        else:
            prompts = [context, *wholes]
        params = {"model": self.served_model, "prompt": prompts, "max_tokens": 0, "echo": True, "logprobs": 1,
                  "temperature": 0.0}
        answer = await self._post(client, self.base_url + "/completions", params, LOGLIKELIHOOD_TIMEOUT_S)
        if isinstance(answer, _GaveUp):
            return Failure(answer.error, answer.info(attempts))
        choices = sorted(answer.body.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != len(prompts):
            raise BackendError(f"{self.public_url}/completions returned {len(choices)} choices for {len(prompts)} "
                               "prompts: log-likelihood scoring needs a list of prompts in one request")
        per_token = [self._prompt_logprobs(c) for c in choices]
        if not self.use_token_ids:
            if (answer.body.get("usage") or {}).get("completion_tokens"):
                raise BackendError(f"{self.public_url}/completions generated tokens although max_tokens=0; "
                                   "log-likelihood scoring needs echo with max_tokens=0")
            n_context, per_token = len(per_token[0][0]), per_token[1:]
            lengths = [len(values) for values, _ in per_token]
        scores = []
        for (logprobs, tops), n_whole in zip(per_token, lengths, strict=True):
            span = logprobs[n_context:n_whole]
            if len(logprobs) < n_whole or any(x is None for x in span):
                raise BackendError(self._no_prompt_logprobs())
            # a token is the argmax when no top alternative beats it; without the top lists nobody can tell
            top_lists = tops[n_context:n_whole]
            greedy = None if not all(isinstance(top, dict) and top for top in top_lists) else \
                all(value >= max(top.values()) - GREEDY_TOLERANCE for value, top in zip(span, top_lists, strict=True))
            scores.append((float(sum(span)), greedy))
        return scores

    def _prompt_logprobs(self, choice: dict) -> tuple[list[float | None], list[dict | None]]:
        """The echoed prompt's token log-probabilities and, per token, the top alternatives' (logprobs=1)."""
        logprobs = choice.get("logprobs")
        values = logprobs.get("token_logprobs") if isinstance(logprobs, dict) else None
        if not isinstance(values, list):
            raise BackendError(self._no_prompt_logprobs())
        tops = logprobs.get("top_logprobs")
        return values, tops if isinstance(tops, list) and len(tops) == len(values) else [None] * len(values)

    def _no_prompt_logprobs(self) -> str:
        return (f"the server at {self.public_url} did not return prompt log-probabilities: log-likelihood tasks "
                "(mmlu) need /v1/completions with echo=true and logprobs (vLLM and evalkit serve have it; "
                "llama.cpp's server does not)")

    # --- HTTP with retries ---------------------------------------------------------------------------------

    def _run(self, coroutine: Awaitable[T]) -> T:
        return asyncio.run(coroutine)  # type: ignore[arg-type]

    def _as_finished(self, jobs: Sequence[Callable[[httpx.AsyncClient], Awaitable[T]]]) -> Iterator[tuple[int, T]]:
        """(job number, result) in the order the jobs finish. The event loop runs in a helper thread; when the
        caller stops early (Ctrl-C, an error) the jobs still in flight are cancelled before this returns."""
        finished: queue.SimpleQueue = queue.SimpleQueue()
        stop = threading.Event()
        end = object()

        def work() -> None:
            try:
                self._run(self._gather(jobs, on_done=lambda k, result: finished.put((k, result)), stop=stop))
                finished.put(end)
            except BaseException as e:  # handed to the caller's thread
                finished.put(e)

        thread = threading.Thread(target=work, name="openai-requests", daemon=True)
        thread.start()
        try:
            while (item := finished.get()) is not end:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join()

    def _client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        return httpx.AsyncClient(headers=self._headers, limits=limits, timeout=httpx.Timeout(
            LOGLIKELIHOOD_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

    async def _gather(self, jobs: Sequence[Callable[[httpx.AsyncClient], Awaitable[T]]],
                      on_done: Callable[[int, T], None] | None = None,
                      stop: threading.Event | None = None) -> list[T]:
        """Run `jobs` at most `concurrency` at a time, in order; the first refusal cancels the rest, and so does
        `stop` once set. `on_done(k, result)` hears of each job that succeeds as it does."""
        if not jobs:
            return []
        semaphore = asyncio.Semaphore(self.concurrency)

        async def limited(k: int, job: Callable[[httpx.AsyncClient], Awaitable[T]], client: httpx.AsyncClient) -> T:
            async with semaphore:
                result = await job(client)
            if on_done is not None:
                on_done(k, result)
            return result

        async def watch(tasks: list[asyncio.Future]) -> None:
            if stop is None:
                return
            while not stop.is_set():
                await asyncio.sleep(0.05)
            for task in tasks:
                task.cancel()

        async with self._client() as client:
            tasks = [asyncio.ensure_future(limited(k, job, client)) for k, job in enumerate(jobs)]
            watcher = asyncio.ensure_future(watch(tasks))
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for task in [*tasks, watcher]:
                    task.cancel()
                await asyncio.gather(*tasks, watcher, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                error = task.exception()
                if isinstance(error, _Refused):
                    raise self._refusal(error) from None
                raise error  # type: ignore[misc]
        if any(task.cancelled() for task in tasks):
            raise asyncio.CancelledError("stopped before every request finished")
        return [task.result() for task in tasks]

    def _refusal(self, error: _Refused) -> BackendError:
        hint = ""
        if error.status in (401, 403):
            hint = " (set EVALKIT_API_KEY or OPENAI_API_KEY to the server's key)"
        elif error.status == 404 and not self.base_url.endswith("/v1"):
            hint = " (the base URL usually ends in /v1)"
        return BackendError(f"{redact_url(error.path)} refused the request (HTTP {error.status}): "
                            f"{error.message}{hint}")

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: between half and all of min(first * 2^(attempt-1), longest)."""
        first, longest = self.backoff_s
        delay = min(first * 2 ** (attempt - 1), longest)
        return delay / 2 + random.uniform(0, delay / 2)

    async def _post(self, client: httpx.AsyncClient, url: str, payload: dict, timeout: float) -> _Answer | _GaveUp:
        """POST with bounded retries; a refusal (a 4xx other than 408/409/429) raises _Refused."""
        start = time.monotonic()
        last, waited = "", 0.0
        for attempt in range(1, self.max_retries + 2):
            wait = None
            try:
                response = await client.post(url, json=payload, timeout=httpx.Timeout(timeout,
                                                                                      connect=CONNECT_TIMEOUT_S))
            except httpx.TransportError as e:  # refused or dropped connection, timeout, broken response
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            else:
                status = response.status_code
                if 200 <= status < 300:
                    try:
                        body = response.json()
                    except ValueError:
                        last = f"HTTP {status} with a body that is not JSON"
                    else:
                        if isinstance(body, dict):
                            return _Answer(body, attempt, time.monotonic() - start, waited)
                        last = f"HTTP {status} with a body that is not a JSON object"
                elif status in RETRYABLE_STATUS or status >= 500:
                    last = f"HTTP {status}: {server_message(response)}"
                    wait = retry_after_s(response)
                else:
                    raise _Refused(status, server_message(response), url)
            if attempt <= self.max_retries:
                wait = self._backoff(attempt) if wait is None else wait
                waited += wait
                await asyncio.sleep(wait)
        return _GaveUp(f"{redact_url(url)} failed {self.max_retries + 1} times; last: {last}", self.max_retries + 1,
                       waited)

    async def _get(self, client: httpx.AsyncClient, url: str) -> httpx.Response | None:
        """GET with the same bounded retries on connection errors and 5xx; None if the server never answered."""
        for attempt in range(1, self.max_retries + 2):
            try:
                response = await client.get(url)
            except httpx.TransportError:
                response = None
            if response is not None and (response.status_code < 500 and response.status_code not in
                                         RETRYABLE_STATUS):
                return response
            if attempt <= self.max_retries:
                wait = retry_after_s(response) if response is not None else None
                await asyncio.sleep(self._backoff(attempt) if wait is None else wait)
        return None

    # --- what the server is ----------------------------------------------------------------------------------

    async def _discover(self, wanted: str | None) -> tuple[str, dict]:
        """The model to name in requests (the one /v1/models lists, or `wanted`) and what the server says of
        itself (model metadata, /version)."""
        async with self._client() as client:
            response = await self._get(client, self.base_url + "/models")
            if response is None:
                raise BackendError(f"cannot reach {self.public_url}/models (is the server running?)")
            if response.status_code in (401, 403):
                raise self._refusal(_Refused(response.status_code, server_message(response),
                                             self.base_url + "/models"))
            models: list[dict] = []
            if response.status_code == 200:
                try:
                    data = response.json().get("data")
                except (ValueError, AttributeError):
                    data = None
                models = [m for m in data if isinstance(m, dict) and m.get("id")] if isinstance(data, list) else []
            ids = [str(m["id"]) for m in models]
            if wanted is None:
                if len(ids) != 1:
                    listed = f"it lists {', '.join(ids)}" if ids else "its /v1/models lists no model"
                    raise BackendError(f"{self.public_url} does not name one model ({listed}): "
                                       "choose one with --served-model NAME")
                wanted = ids[0]
            elif ids and wanted not in ids:
                raise BackendError(f"{self.public_url} does not serve {wanted!r}; it serves {', '.join(ids)}")
            server: dict[str, Any] = {}
            meta = next((m for m in models if m["id"] == wanted), {})
            for key in ("owned_by", "root", "max_model_len"):
                if meta.get(key) is not None:
                    server[key] = meta[key]
            version = await self._get(client, self.root_url + "/version")
            if version is not None and version.status_code == 200:
                try:
                    server["version"] = version.json().get("version")
                except (ValueError, AttributeError):
                    pass
        return wanted, server

    async def _probe_tokenize(self) -> bool:
        """Whether the server tokenizes for us (vLLM's and evalkit serve's POST /tokenize); a server without it
        answers 404. Transient failures are retried, so a flaky start cannot change how prompts are sent."""
        async with self._client() as client:
            try:
                answer = await self._post(client, self.root_url + "/tokenize",
                                          {"model": self.served_model, "prompt": "a"}, LOGLIKELIHOOD_TIMEOUT_S)
            except _Refused:
                return False
        if isinstance(answer, _GaveUp):
            raise BackendError(f"cannot ask {self.public_url} whether it tokenizes: {answer.error}")
        tokens = answer.body.get("tokens")
        return isinstance(tokens, list) and all(isinstance(t, int) for t in tokens)
