"""The HTTP API of `evalkit serve`: the OpenAI completions and chat endpoints, in vLLM's response shapes.

    GET  /v1/models             the one served model
    POST /v1/completions        str / [str] / token ids / [token ids] prompts; max_tokens, temperature, top_p,
                                seed, n, stop, echo, logprobs (vLLM's shape), finish_reason, usage
    POST /v1/chat/completions   messages rendered by the backend's chat format; a final assistant message with
                                continue_final_message=true is the start of the answer
    POST /tokenize, /detokenize vLLM's tokenizer endpoints (a client splits context and continuation with them)
    GET  /version, /health

Defaults follow OpenAI's (max_tokens 16 for completions, temperature 1); evalkit's client always sends every
value. Unknown fields are refused rather than ignored, so no sampling setting is silently dropped. Every
error is an OpenAI-style JSON body ({"error": {"message", "type", "code"}}) and never stops the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Sequence
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from evalkit import __version__
from evalkit.errors import EvalkitError
from evalkit.requests import ChatMessage
from evalkit.serve.engines import Engine, Generated, RequestError, Sampling, TokenLogprobs

LOGPROB_FLOOR = -9999.0  # what vLLM and OpenAI send instead of -inf
CHAT_DEFAULT_MAX_TOKENS = 512  # OpenAI's chat default is "up to the context"; a bounded default suits a local server


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    user: str | None = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, value: float) -> float:
        if value != 0.0:
            raise ValueError("penalties are not supported (only 0)")
        return value

    def sampling(self, max_tokens: int) -> Sampling:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return Sampling(max_tokens=max_tokens, temperature=1.0 if self.temperature is None else self.temperature,
                        top_p=1.0 if self.top_p is None else self.top_p, stop=stop, seed=self.seed, n=self.n)


class CompletionBody(_Body):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=0)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=20)
    add_special_tokens: bool = True


class ChatMessageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatBody(_Body):
    messages: list[ChatMessageBody] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    continue_final_message: bool = False
    add_generation_prompt: bool = True
    logprobs: bool = False


class TokenizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    prompt: str
    add_special_tokens: bool = True


class DetokenizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    tokens: list[int]


def error_response(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}},
                        status_code=status)


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for e in error.errors()[:5]:
        where = ".".join(str(x) for x in e.get("loc", ())[1:])
        parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return "; ".join(parts) or "invalid request"


def create_app(engine: Engine, api_key: str | None = None) -> FastAPI:
    """The API for `engine`; with `api_key`, every route but /health wants `Authorization: Bearer KEY`."""
    app = FastAPI(title="evalkit serve", docs_url=None, redoc_url=None, openapi_url=None)
    started = int(time.time())
    fingerprint = "evalkit-" + __version__ + "-" + hashlib.sha256(
        json.dumps(engine.describe(), sort_keys=True, default=str).encode()).hexdigest()[:12]

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(400, _validation_message(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return error_response(error.status_code, str(error.detail),
                              "not_found_error" if error.status_code == 404 else "invalid_request_error")

    @app.exception_handler(EvalkitError)
    async def _refused(_: Request, error: EvalkitError) -> JSONResponse:
        return error_response(400, str(error))

    @app.exception_handler(Exception)
    async def _crashed(_: Request, error: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(error).__name__}: {error}", "server_error")

    @app.middleware("http")
    async def _authenticate(request: Request, call_next):
        if api_key and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return error_response(401, "missing or wrong API key (Authorization: Bearer KEY)",
                                      "authentication_error")
        return await call_next(request)

    def check_model(name: str | None) -> None:
        if name is not None and name != engine.name:
            raise StarletteHTTPException(404, f"the model {name!r} does not exist; this server serves {engine.name!r}")

    def prompt_ids(ids: Sequence[int]) -> list[int]:
        if not ids:
            raise RequestError("the prompt is empty")
        if bad := [i for i in ids if not 0 <= i < engine.vocab_size]:
            raise RequestError(f"token ids out of range [0, {engine.vocab_size}): {bad[:5]}")
        return list(ids)

    def usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    def logprobs_body(ids: list[int], scored: TokenLogprobs, start: int, top: int, offset: int) -> dict:
        """vLLM's completion logprobs for ids[start:]: tokens, token_logprobs, top_logprobs, text_offset."""
        strings = engine.token_strings(ids)
        tokens, values, tops, offsets = [], [], [], []
        for i in range(start, len(ids)):
            tokens.append(strings[i])
            offsets.append(offset)
            offset += len(strings[i])
            value = scored.chosen[i]
            values.append(None if value is None else max(value, LOGPROB_FLOOR))
            if value is None:
                tops.append(None)
                continue
            best = {engine.token_strings([t])[0]: max(v, LOGPROB_FLOOR) for t, v in (scored.top[i] or [])[:top]}
            best[strings[i]] = max(value, LOGPROB_FLOOR)
            tops.append(best)
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/version")
    async def version() -> dict:
        return {"version": f"evalkit {__version__}"}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": started,
                                            "owned_by": "evalkit", "max_model_len": None}]}

    @app.post("/tokenize")
    async def tokenize(body: TokenizeBody) -> dict:
        check_model(body.model)
        tokens = engine.tokenize(body.prompt, body.add_special_tokens)
        return {"tokens": tokens, "count": len(tokens), "max_model_len": None}

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeBody) -> dict:
        check_model(body.model)
        return {"prompt": engine.detokenize(prompt_ids(body.tokens))}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody) -> dict:
        check_model(body.model)
        if body.stream:
            raise RequestError("stream=true is not supported")
        if isinstance(body.prompt, str) or (body.prompt and isinstance(body.prompt[0], int)):
            prompts = [body.prompt]
        else:
            prompts = list(body.prompt)
        if not prompts:
            raise RequestError("the prompt list is empty")
        max_tokens = 16 if body.max_tokens is None else body.max_tokens
        if max_tokens == 0 and not body.echo:
            raise RequestError("max_tokens=0 needs echo=true (only the prompt comes back)")
        sampling = body.sampling(max_tokens)

        async def one(prompt: str | list[int]) -> tuple[list[int], str, list[Generated]]:
            ids = prompt_ids(engine.tokenize(prompt, body.add_special_tokens) if isinstance(prompt, str) else prompt)
            text = prompt if isinstance(prompt, str) else engine.detokenize(ids)
            if max_tokens == 0:
                return ids, text, [Generated("", "length", 0, []) for _ in range(body.n)]
            return ids, text, await engine.complete(ids, sampling)

        answers = await asyncio.gather(*(one(p) for p in prompts))
        scored: list[TokenLogprobs | None] = [None] * sum(len(a[2]) for a in answers)
        if body.logprobs is not None:  # all choices at once: the engine shares their common prefix
            scored = list(await engine.logprobs([ids + (g.token_ids or []) for ids, _, gen in answers for g in gen],
                                                [len(ids) for ids, _, gen in answers for _ in gen], body.logprobs))
        choices = []
        for ids, text, generated in answers:
            for g in generated:
                s = scored[len(choices)]
                logprobs = None
                if s is not None:
                    logprobs = logprobs_body(ids + (g.token_ids or []), s, 0 if body.echo else len(ids),
                                             body.logprobs or 0, 0)
                choices.append({"index": len(choices), "text": (text if body.echo else "") + g.text,
                                "logprobs": logprobs, "finish_reason": g.finish_reason, "stop_reason": None})
        return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": engine.name, "choices": choices, "system_fingerprint": fingerprint,
                "usage": usage(sum(len(a[0]) for a in answers),
                               sum(g.completion_tokens for a in answers for g in a[2]))}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatBody) -> dict:
        check_model(body.model)
        if body.stream:
            raise RequestError("stream=true is not supported")
        if body.logprobs:
            raise RequestError("logprobs are not supported on chat completions; use /v1/completions")
        messages = [ChatMessage(m.role, m.content) for m in body.messages]
        prefix = ""
        if body.continue_final_message:
            if body.add_generation_prompt:
                raise RequestError("continue_final_message=true needs add_generation_prompt=false")
            if messages[-1].role != "assistant":
                raise RequestError("continue_final_message=true needs a final assistant message")
            prefix = messages.pop().content
        max_tokens = body.max_completion_tokens or body.max_tokens or CHAT_DEFAULT_MAX_TOKENS
        generated = await engine.chat(messages, prefix, body.sampling(max_tokens))
        choices = [{"index": i, "message": {"role": "assistant", "content": g.text}, "logprobs": None,
                    "finish_reason": g.finish_reason, "stop_reason": None} for i, g in enumerate(generated)]
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": engine.name, "choices": choices, "system_fingerprint": fingerprint,
                "usage": usage(generated[0].prompt_tokens or 0 if generated else 0,
                               sum(g.completion_tokens for g in generated))}

    return app
