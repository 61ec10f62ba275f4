"""The `hf:` backend: any causal LM that transformers loads (AutoModelForCausalLM), local folder or hub id.

Generation is exact: each prompt is prefilled alone (no padding goes through the model), its cache is
forked for its samples, and only the decoding steps are batched, rows joining as others finish (see
evalkit/backends/hf_cache.py for how rows of different lengths share a cache). What a row computes is
therefore what it computes alone, up to the rounding of matrix products of other shapes (~1e-6 in float32
logits). Sampling draws each sample from its own generator seeded with `sample_seed`, as the native backend
does, so samples do not depend on the batch size or on their neighbours.

Completions are decoded by decoding prompt plus new tokens and cutting the prompt's text off: decoding the
new tokens alone drops the leading space of a SentencePiece piece ("    return" would lose one space of its
indentation).
"""

from __future__ import annotations

import gc
import hashlib
import inspect
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import torch

from evalkit.backends.base import Backend, BackendError, TokenScorer
from evalkit.backends.mistral_tokenizers import mistral_tokenizer_file
from evalkit.backends.native import parse_dtype
from evalkit.chat import ChatFormat, hf_chat_format
from evalkit.errors import ChatFormatError
from evalkit.models.generate import GenerationJob, SampleRow, sample_tokens
from evalkit.requests import Completion, GenerationRequest, LoglikelihoodRequest, SamplingParams, Scores, sample_seed
from evalkit.sanitize import truncate_at_stop

try:
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

    from evalkit.backends.hf_cache import Rows, gather, stackable
except ImportError as e:  # transformers is the `hf` extra
    raise ImportError(f"{e}; the hf: backend needs transformers: pip install 'evalkit[hf]'") from e

# Prompt tokens decoded in front of new tokens when checking for stop strings (the text after them is the
# same as after the whole prompt; checked, and the whole prompt decoded when it is not).
ANCHOR_TOKENS = 8
# Files a hub download takes: config, weights in safetensors, tokenizer files, chat template, remote code.
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.model.v*", "*.txt", "*.tiktoken", "*.jinja", "*.py"]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _missing_message(repo: str, revision: str | None, reason: str) -> str:
    local = f"./checkpoints/{repo.split('/')[-1]}"
    rev = f" --revision {revision}" if revision else ""
    return (
        f"{repo!r} is neither a checkpoint folder nor in the local Hugging Face cache, and cannot be downloaded "
        f"({reason}). Download it where the hub is reachable (for a gated repository accept its terms and log in "
        f"first):\n    hf download {repo}{rev} --local-dir {local}   (older huggingface_hub: huggingface-cli "
        f"download)\nthen pass the folder: --model hf:{local}"
    )


def resolve_hf_checkpoint(target: str, revision: str | None = None) -> Path:
    """A local folder for `target`: a folder as it is; a hub id's snapshot in the local cache (named by its
    commit), downloaded first only when the hub may be reached (HF_HUB_OFFLINE unset)."""
    path = Path(target).expanduser()
    if path.is_dir():
        if revision is not None:
            raise BackendError(f"--revision applies to hub ids; {target} is a local folder")
        return path
    if not target or target.startswith((".", "/", "~")) or target.count("/") != 1:
        raise BackendError(f"hf:{target}: no such checkpoint folder, and not a hub id (ORGANISATION/NAME)")
    from huggingface_hub import snapshot_download

    try:
        snapshot = Path(snapshot_download(target, revision=revision, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError, and a revision that is not cached
        if _offline():
            raise BackendError(_missing_message(target, revision, "HF_HUB_OFFLINE is set")) from e
        try:
            snapshot = Path(snapshot_download(target, revision=revision, allow_patterns=HUB_FILES))
        except Exception as e2:  # network, authentication, gating or a missing revision: one remedy
            raise BackendError(_missing_message(target, revision, f"{type(e2).__name__}: {e2}")) from e2
    return snapshot


def load_tokenizer(name: str | os.PathLike, trust_remote_code: bool = False) -> tuple[PreTrainedTokenizerBase, str]:
    """A tokenizer and where it came from, for a checkpoint folder or for `--tokenizer NAME_OR_DIR`.

    A mistral-common tokenizer (a name such as v3, or a file such as tokenizer.model.v3 or tekken.json) is
    loaded as transformers' MistralCommonBackend; a folder or hub id through AutoTokenizer.
    """
    file = mistral_tokenizer_file(str(name), folders=False)
    try:
        if file is not None:
            from transformers.tokenization_mistral_common import MistralCommonBackend

            return MistralCommonBackend(tokenizer_path=file), f"mistral-common {file.name}"
        folder = Path(name).expanduser()
        if not folder.is_dir():
            folder = resolve_hf_checkpoint(str(name))
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except BackendError:
        raise
    except Exception as e:  # transformers raises OSError, ValueError or a tokenizers error for unusable files
        raise BackendError(f"cannot load a tokenizer from {name}: {type(e).__name__}: {e}") from e
    return tokenizer, f"{type(tokenizer).__name__} from {name}"


def encode_pair(encode, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation ids split as the native backend (and lm-eval) splits them.

    Trailing spaces of the context move to the continuation; context + continuation is encoded once and the
    continuation is what follows the context's own encoding.
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(context + continuation)
    context_ids = encode(context)
    return context_ids, whole[len(context_ids) :]


class HFBackend(Backend, TokenScorer):
    """Generation and log-likelihood with a transformers causal LM and its own tokenizer."""

    name = "hf"
    options = frozenset({"dtype", "device", "batch_size", "revision", "trust_remote_code", "tokenizer"})

    def __init__(
        self,
        model: transformers.PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        spec: str,
        path: Path,
        revision: str | None = None,
        tokenizer_source: str = "the checkpoint's",
        trust_remote_code: bool = False,
        batch_size: int = 8,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.path = path
        self.revision = revision
        self.tokenizer_source = tokenizer_source
        self.trust_remote_code = trust_remote_code
        self.batch_size = batch_size
        accepted = inspect.signature(model.forward).parameters
        # transformers names the cache `cache_params` in Mamba-style models, `past_key_values` elsewhere.
        self._cache_name = "cache_params" if "cache_params" in accepted else "past_key_values"
        self._position_ids = "position_ids" in accepted
        self._logits_to_keep = "logits_to_keep" in accepted
        eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        self.eos_ids = frozenset(eos)
        # The context the model declares; learned position tables (GPT-2) fail beyond it.
        self.max_length: int | None = getattr(model.config.get_text_config(), "max_position_embeddings", None)
        self._chat_format: ChatFormat | None = None

    @classmethod
    def from_spec(
        cls, target: str, known_ids: dict[str, set[str]] | None = None, dtype: str | None = None,
        device: str | None = None, batch_size: int = 8, revision: str | None = None,
        trust_remote_code: bool = False, tokenizer: str | None = None,
    ) -> HFBackend:
        """Load `hf:FOLDER` or `hf:ORG/NAME` (hub cache, then the hub unless offline)."""
        if not isinstance(trust_remote_code, bool):  # a string "False" would be true: refuse, never guess
            raise BackendError(f"trust_remote_code must be true or false, got {trust_remote_code!r}")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # float32 on CPU (bfloat16 matmuls are slow there and round differently); bfloat16 on accelerators.
        torch_dtype = "auto" if dtype is not None and dtype.lower() == "auto" else parse_dtype(dtype) or (
            torch.float32 if device == "cpu" else torch.bfloat16)
        path = resolve_hf_checkpoint(target, revision)
        tok, source = load_tokenizer(tokenizer if tokenizer is not None else path, trust_remote_code)
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, device_map=device,
                                                         trust_remote_code=trust_remote_code)
        except Exception as e:  # OSError (files), ValueError (unknown architecture, remote code refused), ...
            hint = ("; it needs code from the hub: pass --trust-remote-code if you trust it"
                    if "trust_remote_code" in str(e) else "")
            raise BackendError(f"cannot load hf:{target} as a causal LM: {type(e).__name__}: {e}{hint}") from e
        model.eval()
        n_embeddings = model.get_input_embeddings().num_embeddings
        if len(tok) > n_embeddings:
            raise BackendError(f"the tokenizer ({source}) has {len(tok)} tokens, more than the {n_embeddings} "
                               f"embeddings of hf:{target}; pass the checkpoint's own tokenizer")
        return cls(model, tok, spec=target, path=path, revision=revision,
                   tokenizer_source="the checkpoint's" if tokenizer is None else source,
                   trust_remote_code=trust_remote_code, batch_size=batch_size)

    # ------------------------------------------------------------------------------------------ text

    def encode(self, text: str) -> list[int]:
        """Ids of `text` with the special tokens the tokenizer adds by default (BOS for most models)."""
        return list(self.tokenizer.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def decode_continuation(self, prompt_ids: Sequence[int], new_ids: Sequence[int]) -> str:
        """The text of new_ids as it reads after the prompt: decode(prompt + new) minus decode(prompt).

        The last ANCHOR_TOKENS prompt tokens stand for the prompt (much faster on long prompts); where their
        text is not a prefix of the joint text, the whole prompt is decoded. Where even that is not (the prompt
        ends inside a multi-byte character that the new tokens complete), the cut is after the common prefix.
        """
        for start in (max(len(prompt_ids) - ANCHOR_TOKENS, 0), 0):
            head = self.decode(prompt_ids[start:])
            full = self.decode([*prompt_ids[start:], *new_ids])
            if full.startswith(head):
                return full[len(head) :]
        return full[len(os.path.commonprefix([head, full])) :]

    def chat_format(self) -> ChatFormat:
        """The checkpoint's chat template (mistral-common's encoding for a MistralCommonBackend tokenizer);
        a ChatFormatError when the tokenizer has none."""
        if self._chat_format is None:
            source = f"hf:{self.spec}" if self.tokenizer_source == "the checkpoint's" else self.tokenizer_source
            self._chat_format = hf_chat_format(self.tokenizer, source)
        return self._chat_format

    def _prompt(self, request: GenerationRequest) -> tuple[list[int], dict]:
        """The ids fed for a request, and what to record about them. A chat request is rendered by the chat
        format, response prefix included, so the completion is what follows the prefix."""
        if not request.chat:
            return self.encode(request.prompt), {}
        rendered = self.chat_format().render(request.messages, request.response_prefix)
        return list(rendered.ids), rendered.record()

    # ------------------------------------------------------------------------------------------ model

    def _forward(self, ids: torch.Tensor, rows: Rows | None, first: bool) -> tuple[torch.Tensor, Rows]:
        """Feed ids (b, t) after what `rows` holds (nothing when None); last-position float32 logits (b, vocab).

        The inputs are built by the model's own prepare_inputs_for_generation, as `generate` builds them.
        """
        device = self.model.device
        if rows is None:
            lengths = [ids.shape[1]] * ids.shape[0]
            mask = torch.ones_like(ids)
            positions = torch.arange(ids.shape[1]).expand(ids.shape[0], -1)
            cache = None
        else:
            lengths = [n + ids.shape[1] for n in rows.lengths]
            mask = rows.attention_mask(extra=ids.shape[1])
            positions = torch.tensor(rows.lengths)[:, None] + torch.arange(ids.shape[1])[None, :]
            cache = rows.cache
        kwargs: dict = {self._cache_name: cache, "attention_mask": mask.to(device), "use_cache": True,
                        "is_first_iteration": first}
        if self._position_ids:
            kwargs["position_ids"] = positions.to(device)
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        inputs = self.model.prepare_inputs_for_generation(ids.to(device), **kwargs)
        out = self.model(**inputs)
        new_cache = getattr(out, self._cache_name)
        if new_cache is None:
            raise BackendError(f"hf:{self.spec} returned no cache; it cannot generate with evalkit's hf backend")
        return out.logits[:, -1].float(), Rows(new_cache, lengths)

    @torch.inference_mode()
    def _generate(self, jobs: Sequence[GenerationJob], temperature: float, top_p: float) -> list[list[SampleRow]]:
        """Every sample of every job, at most `batch_size` rows decoding together (the native scheme)."""
        results: list[list[SampleRow | None]] = [[None] * len(job.seeds) for job in jobs]
        waiting: deque[tuple[int, int]] = deque()
        for j, job in enumerate(jobs):
            for s in range(len(job.seeds)):
                if job.max_new_tokens <= 0:
                    results[j][s] = SampleRow(j, s, torch.Generator(), finish="length")
                else:
                    waiting.append((j, s))
        prefilled: dict[int, tuple[Rows, torch.Tensor]] = {}
        left_to_admit = {j: len(job.seeds) for j, job in enumerate(jobs)}
        rows: list[SampleRow] = []
        batch: Rows | None = None
        can_stack = True

        def prefill(j: int) -> tuple[Rows, torch.Tensor]:
            nonlocal can_stack
            if j not in prefilled:
                logits, one = self._forward(torch.tensor([jobs[j].prompt_ids]), None, first=True)
                can_stack = stackable(one.cache)
                prefilled[j] = (one, logits)
            return prefilled[j]

        def record(new_rows: list[SampleRow], tokens: torch.Tensor) -> None:
            for row, token in zip(new_rows, tokens.tolist(), strict=True):
                row.take(token, jobs[row.job], token in self.eos_ids, self.decode_continuation)

        def leave() -> None:
            nonlocal rows, batch
            if not any(row.finish for row in rows):
                return
            for row in rows:
                if row.finish:
                    results[row.job][row.sample] = row
            keep = [i for i, row in enumerate(rows) if not row.finish]
            rows = [rows[i] for i in keep]
            batch = gather([(batch, keep)]) if keep else None

        while waiting or rows:
            admitted: list[tuple[int, int]] = []
            while waiting and len(rows) + len(admitted) < self.batch_size:
                j = waiting[0][0]
                # A cache that cannot be stacked decodes one prompt's samples at a time.
                if not can_stack and (rows or (admitted and admitted[0][0] != j)):
                    break
                admitted.append(waiting.popleft())
                prefill(j)
            parts: list[tuple[Rows, list[int]]] = [(batch, list(range(len(rows))))] if batch is not None else []
            new_rows: list[SampleRow] = []
            first_logits: list[torch.Tensor] = []
            for j in dict.fromkeys(j for j, _ in admitted):
                samples = [s for jj, s in admitted if jj == j]
                one, logits = prefilled[j]
                parts.append((one, [0] * len(samples)))
                first_logits.append(logits.expand(len(samples), -1))
                new_rows += [SampleRow(j, s, torch.Generator().manual_seed(jobs[j].seeds[s])) for s in samples]
                left_to_admit[j] -= len(samples)
                if left_to_admit[j] == 0:
                    del prefilled[j]
            if new_rows:
                logits = torch.cat(first_logits)
                record(new_rows, sample_tokens(logits, temperature, top_p, [r.generator for r in new_rows]))
                batch = gather(parts)
                rows = rows + new_rows
                leave()
            if not rows:
                continue
            last = torch.tensor([[row.ids[-1]] for row in rows])
            logits, batch = self._forward(last, batch, first=False)
            record(rows, sample_tokens(logits, temperature, top_p, [r.generator for r in rows]))
            leave()
        return results  # type: ignore[return-value]  # every slot is filled once its sample finishes

    # ------------------------------------------------------------------------------------------ backend API

    def generate(self, requests: Sequence[GenerationRequest], sampling: SamplingParams) -> list[list[Completion]]:
        greedy = sampling.temperature <= 0.0
        prompts = [self._prompt(r) for r in requests]
        jobs = [
            GenerationJob(prompt_ids=ids, max_new_tokens=self._room(len(ids), r.max_tokens), stop=tuple(r.stop),
                 # Greedy samples are all the same sequence: generate it once and repeat it.
                 seeds=[sample_seed(sampling.seed, r.task_id, i)
                        for i in (r.sample_indices[:1] if greedy else r.sample_indices)])
            for r, (ids, _) in zip(requests, prompts, strict=True)
        ]
        out = []
        for request, job, (_, info), samples in zip(requests, jobs, prompts,
                                                    self._generate(jobs, sampling.temperature, sampling.top_p),
                                                    strict=True):
            texts = []
            if job.max_new_tokens < request.max_tokens:  # recorded: the model's context ended the completion
                info = {**info, "context_limit": self.max_length}
            for row in samples:
                text = row.text if job.stop and row.ids else self.decode_continuation(job.prompt_ids, row.ids)
                # an end-of-sequence token is a "stop", as OpenAI-compatible servers say
                finish = "stop" if row.finish == "eos" else row.finish
                texts.append(Completion(truncate_at_stop(text, request.stop), finish_reason=finish,
                                        info={**info, "prompt_tokens": len(job.prompt_ids),
                                              "completion_tokens": len(row.ids)}))
            out.append(texts * len(request.sample_indices) if greedy else texts)
        return out

    def _room(self, prompt_tokens: int, max_tokens: int) -> int:
        """New tokens that fit in the model's declared context (max_position_embeddings) after the prompt."""
        if self.max_length is None:
            return max_tokens
        return max(min(max_tokens, self.max_length - prompt_tokens), 0)

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[Scores]:
        """Sum of float32 log-probabilities of each continuation's tokens after its context."""
        results: list[Scores] = []
        for request in requests:
            pairs = [self.split_pair(request.context, c) for c in request.continuations]
            # All continuations share the context's encoding (it does not depend on the continuation).
            context_ids = pairs[0][0] if pairs else []
            try:
                scored = self.score_tokens(context_ids, [ids for _, ids in pairs])
            except BackendError as e:
                raise BackendError(f"{e} (task {request.task_id})") from None
            results.append([logp for logp, _ in scored])
        return results

    # ------------------------------------------------------------------------------------------ tokens

    def split_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        context_ids, continuation_ids = encode_pair(self.encode, context, continuation)
        return self._with_prefix(context_ids), continuation_ids

    def document_ids(self, text: str) -> tuple[int, list[int]]:
        return self._with_prefix([])[0], list(self.tokenizer.encode(text, add_special_tokens=False))

    @torch.inference_mode()
    def score_tokens(self, context_ids: Sequence[int],
                     continuations: Sequence[Sequence[int]]) -> list[tuple[float, bool]]:
        """All continuations go through the model together, each after the context, right-padded: a causal
        model's output at a position depends only on the tokens before it, so padding after the scored tokens
        changes nothing."""
        results = [(0.0, True)] * len(continuations)
        scored = [i for i, cont in enumerate(continuations) if cont]
        if not scored:
            return results
        sequences = [[*context_ids, *continuations[i]] for i in scored]
        width = max(map(len, sequences))
        if self.max_length is not None and width > self.max_length:
            raise BackendError(f"hf:{self.spec}: a context and continuation of {width} tokens exceed the model's "
                               f"{self.max_length} positions")
        ids = torch.zeros(len(sequences), width, dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, : len(seq)] = torch.tensor(seq)
        # Logits only from the first position that predicts a continuation token (vocab x context floats per
        # row are the bulk of the memory otherwise).
        first = len(context_ids) - 1
        kwargs = {"logits_to_keep": width - first} if self._logits_to_keep else {}
        logits = self.model(input_ids=ids.to(self.model.device), **kwargs).logits.float()
        offset = width - logits.shape[1]
        logp = torch.log_softmax(logits, dim=-1)
        for row, i in enumerate(scored):
            cont = torch.tensor(list(continuations[i]), device=logp.device)
            positions = torch.arange(first - offset, first - offset + len(cont), device=logp.device)
            greedy = bool((logits[row, positions].argmax(-1) == cont).all())
            results[i] = (float(logp[row, positions, cont].sum()), greedy)
        return results

    def _with_prefix(self, context_ids: list[int]) -> list[int]:
        """An empty context becomes BOS (or EOS), so the first continuation token has something to follow."""
        if context_ids:
            return context_ids
        prefix = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else \
            self.tokenizer.eos_token_id
        if prefix is None:
            raise BackendError(f"hf:{self.spec}: an empty context cannot be scored with a tokenizer without "
                               "BOS or EOS")
        return [prefix]

    def describe(self) -> dict:
        """Identity first (the keys evalkit.experiment treats as which model ran), then how it ran.

        A hub model is `ORG/NAME@REVISION` when a revision was asked for; its path is the cache snapshot,
        whose folder name is the commit.
        """
        weight = next(self.model.parameters())
        config_file = self.path / "config.json"
        return {
            "name": self.name,
            "model": f"{self.spec}@{self.revision}" if self.revision else self.spec,
            "path": str(self.path),
            "arch": self.model.config.model_type,
            "config_sha256": hashlib.sha256(config_file.read_bytes()).hexdigest()[:16],
            "tokenizer": f"{self.tokenizer_source} ({type(self.tokenizer).__name__}, {len(self.tokenizer)} tokens)",
            "dtype": str(weight.dtype).removeprefix("torch."),
            "device": str(weight.device),
            "attn_implementation": self.model.config._attn_implementation,
            "trust_remote_code": self.trust_remote_code,
            "special_tokens_added": self.tokenizer.convert_ids_to_tokens(self.encode("")),
            "eos_token_ids": sorted(self.eos_ids),
            "batch_size": self.batch_size,
            "batching": "exact: prompts prefilled alone, decoding steps batched",
            "chat_format": self._describe_chat_format(),
        }

    def _describe_chat_format(self) -> dict | None:
        try:
            return self.chat_format().describe()
        except ChatFormatError:  # no chat template: only --chat needs one, and it says so
            return None

    def close(self) -> None:
        on_cuda = next(self.model.parameters()).is_cuda
        del self.model
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
