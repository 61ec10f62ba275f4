"""lm-evaluation-harness on evalkit's models: an lm-eval `LM` registered as "evalkit".

    lm_eval.simple_evaluate(model=EvalkitLM(model="codestral-mamba"), tasks=["hellaswag"])
    evalkit lm-eval --model_args model=codestral-mamba --tasks hellaswag,arc_easy

`model` is any evalkit model spec (`evalkit.backends.resolve_backend`): a native name or checkpoint folder,
`hf:...`, `openai:...`. What each lm-eval request becomes:

- `loglikelihood` (context, continuation) -> (sum of log p, is_greedy). On backends that score tokens in this
  process (native models and `hf:` checkpoints, `TokenScorer`) the continuation's tokens are scored one by one
  and is_greedy says each was the argmax; the context and continuation are split into tokens as lm-eval's
  TemplateLM does (trailing context spaces move to the continuation, an empty context is the prefix token
  alone). A server (`openai:`) gives the sum through `GreedyScorer.loglikelihood_greedy`, and is_greedy from its
  echoed top log-probabilities; a backend that cannot say gets is_greedy from whether a greedy generation from
  the context starts with the continuation's text (one extra generation per distinct context).
- `loglikelihood_rolling` (text,) -> log p of the whole text in lm-eval's disjoint windows of `max_length`
  tokens, each token predicted once, the first window conditioned on the prefix token (token scorers only).
- `generate_until` (context, gen_kwargs) -> the continuation cut at the first `until` string, honouring
  `max_gen_toks`, `do_sample`, `temperature` and `top_p`. The K identical requests lm-eval sends for
  `repeats: K` are samples 0..K-1 of one GenerationRequest, each drawn with its own
  `sample_seed(seed, "<task>/<doc_id>", k)`, so repeats differ and a rerun draws the same samples.

With `--apply_chat_template`, `apply_chat_template` renders the conversation with the backend's own chat format
(evalkit/chat.py: mistral-common for native models, the checkpoint's template for `hf:`) and remembers it: a
generation from that context is sent as a chat request (the backend renders it to the same ids), and on token
scorers a log-likelihood is scored on the ids of the conversation with the continuation as the assistant's answer.

Prompts are never truncated: lm-eval's own models cut contexts longer than max_length from the left with
only a warning. lm-eval is an optional extra (`evalkit[lm-eval]`); only this module imports it.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from evalkit.backends import Backend, backend_class, resolve_backend
from evalkit.backends.base import GreedyScorer, TokenScorer
from evalkit.errors import EvalkitError
from evalkit.requests import ChatMessage, Failure, GenerationRequest, LoglikelihoodRequest, SamplingParams
from evalkit.sanitize import truncate_at_stop


class LmEvalError(EvalkitError):
    """The lm-eval bridge cannot serve a request (a missing extra, a generation setting it cannot honour)."""


try:
    from lm_eval.api.instance import Instance
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
    from lm_eval.models.utils import normalize_gen_kwargs
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as e:  # pragma: no cover - depends on the environment
    raise LmEvalError(
        f"the lm-eval bridge needs lm-evaluation-harness ({e}); install it with: pip install 'evalkit[lm-eval]'"
    ) from e

__all__ = ["EvalkitLM", "LmEvalError"]

# lm-eval's own defaults (HFLM): 2048 tokens of context per rolling window, 256 new tokens per generation.
DEFAULT_MAX_LENGTH = 2048
DEFAULT_MAX_GEN_TOKS = 256
# Generation settings that change nothing at these values; any other value of them is refused.
NO_OP_GEN_KWARGS: dict[str, tuple[Any, ...]] = {
    "top_k": (None, 0, -1),
    "num_beams": (1,),
    "repetition_penalty": (None, 1, 1.0),
    "min_p": (None, 0, 0.0),
}
# lm-eval's generic arguments, given to every model; a backend that has no such setting ignores them.
LM_EVAL_ARGUMENTS = ("batch_size", "device")


def _task_id(request: Instance) -> str:
    """The document a request belongs to, as evalkit names problems: "<task>/<doc_id>"."""
    if request.task_name is not None and request.doc_id is not None:
        return f"{request.task_name}/{request.doc_id}"
    # A request built by hand has no document: its text names it.
    return "lm-eval/" + hashlib.sha256(json.dumps(request.args, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _positive_int(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise LmEvalError(f"{name} must be a positive integer, got {value!r}")
    return number


def _sampling_settings(gen_kwargs: dict, default_max_gen_toks: int) -> tuple[list[str], int, float, float]:
    """(until, max_gen_toks, temperature, top_p) of lm-eval generation kwargs; temperature 0 is greedy."""
    if not isinstance(gen_kwargs, dict):
        raise LmEvalError(f"generation kwargs must be a dict, got {gen_kwargs!r}")
    kwargs = dict(normalize_gen_kwargs(gen_kwargs, default_max_gen_toks))
    until = [s for s in kwargs.pop("until") if s]
    if not all(isinstance(s, str) for s in until):
        raise LmEvalError(f"`until` must hold strings, got {until!r}")
    max_gen_toks = int(kwargs.pop("max_gen_toks"))
    do_sample = bool(kwargs.pop("do_sample"))
    # do_sample without a temperature samples at 1.0, as transformers' generate does.
    temperature = float(kwargs.pop("temperature", 1.0)) if do_sample else 0.0
    kwargs.pop("temperature", None)
    top_p = float(kwargs.pop("top_p", None) or 1.0)
    if temperature < 0 or not 0.0 < top_p <= 1.0:
        raise LmEvalError(f"temperature must be >= 0 and top_p in (0, 1]; got {temperature} and {top_p}")
    unsupported = {k: v for k, v in kwargs.items() if v not in NO_OP_GEN_KWARGS.get(k, ())}
    if unsupported:
        raise LmEvalError(
            f"generation kwargs {unsupported} are not supported by the evalkit model "
            "(it honours until, max_gen_toks, do_sample, temperature and top_p)"
        )
    return until, max_gen_toks, temperature, top_p


@register_model("evalkit")
class EvalkitLM(LM):
    """An lm-eval model backed by any evalkit backend (see the module docstring)."""

    def __init__(
        self,
        model: str | Backend,
        seed: int = 1234,
        max_length: int = DEFAULT_MAX_LENGTH,
        max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
        requests_per_call: int = 64,
        batch_size: int | str | None = None,
        max_batch_size: int | None = None,
        device: str | None = None,
        **backend_options: Any,
    ) -> None:
        """`model`: an evalkit model spec or a built Backend. `seed`: the run seed of every sample's seed.
        `max_length`: tokens per loglikelihood_rolling window. `max_gen_toks`: the generation limit of requests
        that set none. `requests_per_call`: prompts per backend call. `batch_size`, `device` and the remaining
        options (`dtype`, ...) go to the backend; lm-eval's "auto" batch size or device is the backend's
        default, and `batch_size`/`device` are dropped for backends without such a setting (lm-eval passes them
        to every model). `max_batch_size` is accepted for lm-eval's sake and unused."""
        super().__init__()
        self.seed = int(seed)
        self.max_length = _positive_int("max_length", max_length)
        self.max_gen_toks = _positive_int("max_gen_toks", max_gen_toks)
        self.requests_per_call = _positive_int("requests_per_call", requests_per_call)
        if isinstance(model, Backend):
            self.backend = model
            self.spec = model.name
        else:
            self.spec = str(model)
            generic = {"batch_size": batch_size, "device": device}
            cls = backend_class(self.spec)
            takes = cls.options
            if unknown := sorted(set(backend_options) - takes):
                raise LmEvalError(
                    f"model_args {', '.join(unknown)} do not apply to model={self.spec} (the {cls.name} backend "
                    f"takes: {', '.join(sorted(takes)) or 'nothing'}; the bridge: seed, max_length, max_gen_toks, "
                    "requests_per_call)"
                )
            for name in LM_EVAL_ARGUMENTS:
                value = generic[name]
                if name in takes and value is not None and not str(value).lower().startswith("auto"):
                    backend_options[name] = _positive_int(name, value) if name == "batch_size" else str(value)
            self.backend = resolve_backend(self.spec, **backend_options)
        # apply_chat_template's renderings -> the conversation and response prefix they stand for
        self.chats: dict[str, tuple[tuple[ChatMessage, ...], str]] = {}

    # --- log-likelihood -------------------------------------------------------------------------------------

    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [req.args for req in requests]
        for pair in pairs:
            if len(pair) != 2 or not all(isinstance(text, str) for text in pair):
                raise LmEvalError(f"loglikelihood takes (context, continuation) strings, got {pair!r}")
        if isinstance(self.backend, TokenScorer):
            results = self._token_loglikelihood(self.backend, pairs, disable_tqdm)
        else:
            results = self._text_loglikelihood(requests, disable_tqdm)
        for pair, result in zip(pairs, results, strict=True):
            self.cache_hook.add_partial("loglikelihood", pair, result)
        return results

    def _token_encode(self, scorer: TokenScorer, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids as lm-eval's TemplateLM splits them; an empty context is the prefix token alone. A context
        that apply_chat_template rendered is the conversation's ids, and the continuation is what rendering it as
        (the rest of) the assistant's answer adds: the split of encode_pair, in the chat format."""
        if context in self.chats:
            messages, prefix = self.chats[context]
            chat_format = self.backend.chat_format()
            head = list(chat_format.render(messages, prefix).ids)
            whole = list(chat_format.render(messages, prefix + continuation).ids)
            shared = next((k for k, (a, b) in enumerate(zip(head, whole, strict=False)) if a != b), len(head))
            return whole[:shared], whole[shared:]
        return scorer.split_pair(context, continuation)

    def _token_loglikelihood(self, scorer: TokenScorer, pairs: list[tuple[str, str]],
                             disable_tqdm: bool) -> list[tuple[float, bool]]:
        # Requests with one context (the choices of a multiple-choice question) share one pass over it.
        by_context: dict[tuple[int, ...], list[tuple[int, list[int]]]] = defaultdict(list)
        for i, (context, continuation) in enumerate(pairs):
            context_ids, continuation_ids = self._token_encode(scorer, context, continuation)
            by_context[tuple(context_ids)].append((i, continuation_ids))
        results: list[tuple[float, bool]] = [(0.0, False)] * len(pairs)
        for context_ids, items in tqdm(by_context.items(), desc="evalkit loglikelihood", disable=disable_tqdm):
            scores = scorer.score_tokens(context_ids, [ids for _, ids in items])
            for (i, _), score in zip(items, scores, strict=True):
                results[i] = score
        return results

    def _text_loglikelihood(self, requests: list[Instance], disable_tqdm: bool) -> list[tuple[float, bool]]:
        """Any other backend: the sum from Backend.loglikelihood. is_greedy from the server's top log-probabilities
        where it gives them (`GreedyScorer`), else from one greedy generation per context."""
        contexts: dict[str, tuple[str, list[str]]] = {}  # context -> (task id, distinct continuations)
        for req in requests:
            context, continuation = req.args
            if context in self.chats:
                raise LmEvalError(f"log-likelihoods of chat prompts need token-level scores, which the "
                                  f"{self.backend.name} backend does not give; use a native model or hf:")
            task_id, continuations = contexts.setdefault(context, (_task_id(req), []))
            if continuation not in continuations:
                continuations.append(continuation)
        items = list(contexts.items())
        scored: dict[tuple[str, str], tuple[float, bool | None]] = {}
        for start in tqdm(range(0, len(items), self.requests_per_call), desc="evalkit loglikelihood",
                          disable=disable_tqdm):
            chunk = items[start : start + self.requests_per_call]
            asked = [LoglikelihoodRequest(task_id, context, tuple(conts)) for context, (task_id, conts) in chunk]
            if isinstance(self.backend, GreedyScorer):
                answers = self.backend.loglikelihood_greedy(asked)
            else:
                answers = [s if isinstance(s, Failure) else [(float(x), None) for x in s]
                           for s in self.backend.loglikelihood(asked)]
            for (context, (task_id, conts)), answer in zip(chunk, answers, strict=True):
                if isinstance(answer, Failure):
                    raise LmEvalError(f"{task_id}: the {self.backend.name} backend failed to score: {answer.error}")
                scored.update({(context, c): (float(lp), g) for c, (lp, g) in zip(conts, answer, strict=True)})
            unknown = [(context, (task_id, conts)) for context, (task_id, conts) in chunk
                       if any(scored[(context, c)][1] is None for c in conts)]
            if not unknown:
                continue
            # A token is at least one byte of text, so this many tokens cover every continuation.
            generated = self.backend.generate(
                [GenerationRequest(task_id, context, max_tokens=max(1, *(len(c.encode()) for c in conts)))
                 for context, (task_id, conts) in unknown],
                SamplingParams(n=1, temperature=0.0, seed=self.seed),
            )
            for (context, (task_id, conts)), samples in zip(unknown, generated, strict=True):
                if samples[0].error:
                    raise LmEvalError(f"{task_id}: the {self.backend.name} backend failed: {samples[0].error}")
                for c in conts:
                    scored[(context, c)] = (scored[(context, c)][0], samples[0].text.startswith(c))
        return [(scored[req.args][0], bool(scored[req.args][1])) for req in requests]

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        scorer = self.backend
        if not isinstance(scorer, TokenScorer):
            raise LmEvalError(
                f"loglikelihood_rolling (perplexity tasks) needs token-level scores, which the {self.backend.name} "
                "backend does not give; use a native model (a name or a checkpoint folder) or hf:"
            )
        results = []
        for req in tqdm(requests, desc="evalkit loglikelihood_rolling", disable=disable_tqdm):
            (text,) = req.args
            prefix_token, ids = scorer.document_ids(text)
            windows = map(make_disjoint_window, get_rolling_token_windows(
                token_list=ids, prefix_token=prefix_token, max_seq_len=self.max_length, context_len=1,
            ))
            total = sum(scorer.score_tokens(context, [predicted])[0][0] for context, predicted in windows)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            results.append(total)
        return results

    # --- generation -----------------------------------------------------------------------------------------

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        # Identical requests of one document are its samples 0..K-1 (lm-eval's `repeats`).
        prompts: dict[tuple[str, str, str], list[int]] = {}  # (task id, context, gen_kwargs) -> request positions
        settings: dict[tuple[str, str, str], tuple[list[str], int, float, float]] = {}
        for i, req in enumerate(requests):
            context, gen_kwargs = req.args
            if not isinstance(context, str):
                raise LmEvalError(f"generate_until takes a string context, got {context!r}")
            key = (_task_id(req), context, json.dumps(gen_kwargs, sort_keys=True, default=str))
            if key not in settings:
                settings[key] = _sampling_settings(gen_kwargs, self.max_gen_toks)
            prompts.setdefault(key, []).append(i)
        # One backend call draws with one temperature and top_p.
        groups: dict[tuple[float, float], list[tuple[GenerationRequest, list[int]]]] = defaultdict(list)
        for key, where in prompts.items():
            task_id, context, _ = key
            until, max_gen_toks, temperature, top_p = settings[key]
            messages, prefix = self.chats.get(context, ((), ""))
            request = GenerationRequest(task_id, context, stop=tuple(until), max_tokens=max_gen_toks,
                                        messages=messages, response_prefix=prefix,
                                        sample_indices=tuple(range(len(where))))
            groups[(temperature, top_p)].append((request, where))
        results: list[str | None] = [None] * len(requests)
        progress = tqdm(total=len(requests), desc="evalkit generate_until", disable=disable_tqdm)
        for (temperature, top_p), group in groups.items():
            for start in range(0, len(group), self.requests_per_call):
                chunk = group[start : start + self.requests_per_call]
                sampling = SamplingParams(n=max(len(where) for _, where in chunk), temperature=temperature,
                                          top_p=top_p, seed=self.seed)
                completions = self.backend.generate([request for request, _ in chunk], sampling)
                for (request, where), samples in zip(chunk, completions, strict=True):
                    for i, sample in zip(where, samples, strict=True):
                        if sample.error:
                            raise LmEvalError(f"{request.task_id}: the {self.backend.name} backend failed: "
                                              f"{sample.error}")
                        results[i] = truncate_at_stop(sample.text, request.stop)
                        self.cache_hook.add_partial("generate_until", requests[i].args, results[i])
                    progress.update(len(where))
        progress.close()
        return results  # type: ignore[return-value]  # every position belongs to one prompt's samples

    # --- chat ------------------------------------------------------------------------------------------------

    @property
    def tokenizer_name(self) -> str:
        """Names the prompt format in lm-eval's request-cache keys."""
        return f"evalkit:{self.spec}"

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The conversation rendered by the backend's chat format (its text); remembered, so that requests with
        this context go to the backend as the conversation itself. Without `add_generation_prompt` a final
        assistant turn is the start of the answer (lm-eval's gen_prefix)."""
        try:
            turns = tuple(ChatMessage(str(turn["role"]), str(turn["content"])) for turn in chat_history)
        except (KeyError, TypeError) as e:
            raise LmEvalError(f"a chat history is a list of {{'role', 'content'}} turns, got {chat_history!r}") from e
        prefix = ""
        if not add_generation_prompt and turns and turns[-1].role == "assistant":
            turns, prefix = turns[:-1], turns[-1].content
        chat_format = self.backend.chat_format()
        if chat_format is None:  # a server renders: this text only names the conversation for lm-eval's records
            text = "".join(f"<{m.role}>\n{m.content}\n" for m in turns) + f"<assistant>\n{prefix}"
        else:
            text = chat_format.render(turns, prefix).text
        self.chats[text] = (turns, prefix)
        return text

    # --- records --------------------------------------------------------------------------------------------

    def get_model_info(self) -> dict:
        """What lm-eval writes into its results' config: the backend and every setting that moves a score."""
        return {"evalkit": {"backend": self.backend.describe(), "seed": self.seed, "max_length": self.max_length,
                            "max_gen_toks": self.max_gen_toks}}


# --- the `evalkit lm-eval` command --------------------------------------------------------------------------

LM_EVAL_SUBCOMMANDS = ("run", "ls", "validate")


def _given(args: Sequence[str], *names: str) -> bool:
    return any(a == n or a.startswith(n + "=") for a in args for n in names)


def lm_eval_argv(args: Sequence[str]) -> list[str]:
    """lm-eval's command line for `evalkit lm-eval ARGS`.

    `run` is meant unless another lm-eval subcommand comes first. A run without --model uses the evalkit model,
    and without --config, --device and --batch_size default to "auto" (the backend's own choice: CUDA when
    present, else the CPU) instead of lm-eval's cuda:0 and 1.
    """
    args = list(args)
    if args and args[0] in LM_EVAL_SUBCOMMANDS[1:]:
        return ["lm-eval", *args]
    if args and args[0] == "run":
        args = args[1:]
    if not _given(args, "--model", "-M"):
        args += ["--model", "evalkit"]
    if not _given(args, "--config", "-C"):
        if not _given(args, "--device"):
            args += ["--device", "auto"]
        if not _given(args, "--batch_size", "-b"):
            args += ["--batch_size", "auto"]
    return ["lm-eval", "run", *args]


def run_cli(args: Sequence[str]) -> None:
    """Run lm-eval's own command line with the evalkit model registered (this module's import registers it)."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = lm_eval_argv(args)
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
