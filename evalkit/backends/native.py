"""The `native` backend: evalkit's own PyTorch models (Mamba-2, Mistral) on real checkpoints."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path

import torch

from evalkit.backends.base import Backend, BackendError, TokenScorer
from evalkit.backends.mistral_tokenizers import MistralTokenizerFile, native_tokenizer
from evalkit.chat import ChatFormat, mistral_chat_format
from evalkit.models import load_model, model_arch
from evalkit.models.checkpoint import CheckpointError, config_hash, read_config
from evalkit.models.generate import GenerationJob, generate_batch, score_continuations, score_tokens
from evalkit.models.registry import registered, resolve_checkpoint
from evalkit.models.tokenizer import MistralTokenizer, tokenizer_for_vocab
from evalkit.requests import Completion, GenerationRequest, LoglikelihoodRequest, SamplingParams, Scores, sample_seed
from evalkit.sanitize import truncate_at_stop

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """A --dtype value as a torch dtype; None or "auto" keeps the checkpoint's."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype.lower() == "auto":
        return None
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise BackendError(f"unknown dtype {dtype!r} (choose from auto, {', '.join(DTYPES)})") from None


def encode_pair(tokenizer: MistralTokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation ids the way lm-eval splits them, with bos in front of the context.

    Trailing spaces of the context move to the continuation (SentencePiece attaches a space to the word
    after it); the whole text is encoded once and the continuation is what follows the context's own
    encoding, so the continuation's first token is the one the model really sees after the context.
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids) :]


class NativeBackend(Backend, TokenScorer):
    """Generation and log-likelihood with an in-repo model and the real Mistral tokenizer."""

    name = "native"
    options = frozenset({"dtype", "device", "batch_size", "tokenizer"})

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: MistralTokenizer,
        *,
        spec: str,
        path: Path,
        arch: str,
        batch_size: int = 8,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.path = path
        self.arch = arch
        self.batch_size = batch_size
        self._chat_format: ChatFormat | None = None

    @classmethod
    def from_spec(
        cls, spec: str, known_ids: dict[str, set[str]] | None = None, dtype: str | None = None,
        device: str | None = None, batch_size: int = 8, tokenizer: str | None = None,
    ) -> NativeBackend:
        """Load a registry name (codestral-mamba, mistral-7b, ...) or a checkpoint directory.

        The tokenizer is the Mistral one of the checkpoint's vocabulary size unless `tokenizer` names another
        (`--tokenizer`: v1, v3, ..., a mistral-common tokenizer file or a folder with one).
        """
        torch_dtype = parse_dtype(dtype)
        try:
            path = resolve_checkpoint(spec)
            arch = model_arch(path)
            entry = registered(spec)
            if entry is not None and entry[1].arch != arch:
                raise CheckpointError(
                    f"{path}: {spec!r} should be a {entry[1].arch} checkpoint, found {arch}"
                )
            _, config = read_config(path)
            vocab = int(config["vocab_size"])
            tokenizer = tokenizer_for_vocab(vocab) if tokenizer is None else native_tokenizer(tokenizer)
            if tokenizer.vocab_size > vocab:
                raise BackendError(f"the tokenizer {tokenizer.version} has {tokenizer.vocab_size} tokens, more "
                                   f"than the {vocab} embeddings of {path}")
            model = load_model(path, torch_dtype, device)
        except (CheckpointError, KeyError, ValueError) as e:
            raise BackendError(str(e)) from e
        return cls(model, tokenizer, spec=spec, path=path, arch=arch, batch_size=batch_size)

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingParams) -> list[list[Completion]]:
        greedy = sampling.temperature <= 0.0
        # Greedy samples are all the same sequence: generate it once and repeat it.
        prompts, prompt_info = [], []
        for r in requests:
            if r.chat:  # the instruct prompt, response prefix included: the completion is what follows it
                rendered = self.chat_format().render(r.messages, r.response_prefix)
                prompts.append(list(rendered.ids))
                prompt_info.append(rendered.record())
            else:
                prompts.append(self.tokenizer.encode(r.prompt))
                prompt_info.append({"prompt_tokens": len(prompts[-1])})
        jobs = [
            GenerationJob(
                prompt_ids=ids,
                max_new_tokens=r.max_tokens,
                seeds=[sample_seed(sampling.seed, r.task_id, i) for i in (r.sample_indices[:1] if greedy
                                                                          else r.sample_indices)],
                stop=tuple(r.stop),
            )
            for r, ids in zip(requests, prompts, strict=True)
        ]
        completions = generate_batch(
            self.model,
            jobs,
            decode=self.tokenizer.decode_continuation,
            eos_id=self.tokenizer.eos_id,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            batch_size=self.batch_size,
        )
        out = []
        for request, info, samples in zip(requests, prompt_info, completions, strict=True):
            texts = [Completion(truncate_at_stop(c.text, request.stop), finish_reason=c.finish_reason,
                                info=info | {"completion_tokens": c.n_tokens}) for c in samples]
            out.append(texts * len(request.sample_indices) if greedy else texts)
        return out

    def chat_format(self) -> ChatFormat:
        """mistral-common's instruct encoding for this model's tokenizer (built on first use)."""
        if self._chat_format is None:
            # A tokenizer read from a file (--tokenizer) renders with that file's own instruct encoding.
            source = self.tokenizer.mistral if isinstance(self.tokenizer, MistralTokenizerFile) else \
                self.tokenizer.version
            self._chat_format = mistral_chat_format(source)
        return self._chat_format

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Scores]:
        results = []
        for request in requests:
            pairs = [encode_pair(self.tokenizer, request.context, c) for c in request.continuations]
            # All continuations share the context's encoding (it does not depend on the continuation).
            context_ids = pairs[0][0] if pairs else self.tokenizer.encode(request.context)
            results.append(score_continuations(self.model, context_ids, [ids for _, ids in pairs]))
        return results

    def split_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if context == "":
            return [self.tokenizer.bos_id], self.tokenizer.encode(continuation, bos=False)
        return encode_pair(self.tokenizer, context, continuation)

    def document_ids(self, text: str) -> tuple[int, list[int]]:
        return self.tokenizer.bos_id, self.tokenizer.encode(text, bos=False)

    def score_tokens(self, context_ids: Sequence[int],
                     continuations: Sequence[Sequence[int]]) -> list[tuple[float, bool]]:
        return score_tokens(self.model, context_ids, continuations, self.batch_size)

    def describe(self) -> dict:
        weight = next(self.model.parameters())
        return {
            "name": self.name,
            "model": self.spec,
            "path": str(self.path),
            "arch": self.arch,
            "dtype": str(weight.dtype).removeprefix("torch."),
            "device": str(weight.device),
            "tokenizer": f"mistral-common {self.tokenizer.version} ({self.tokenizer.vocab_size} tokens)",
            "config_sha256": config_hash(self.path),
            "batch_size": self.batch_size,
            "chat_format": self.chat_format().describe(),
        }

    def close(self) -> None:
        on_cuda = next(self.model.parameters()).is_cuda
        del self.model
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
