"""Generation and scoring shared by the in-repo models (Mamba-2, Mistral), through the model's cache.

The model protocol, which both models implement:

- `model(input_ids)`: input_ids LongTensor (b, t) -> logits float32 (b, t, vocab); a full forward from
  an empty state, no cache.
- `model.new_cache(batch_size) -> cache`: an empty cache for `batch_size` rows.
- `model.forward_cached(input_ids, cache, last_only=False) -> logits`: each row consumes its t new
  tokens after what that row of the cache already holds, at that row's own position (rows of one
  cache may hold sequences of different lengths), and the cache is updated to include them. Returns
  float32 logits (b, t, vocab), or (b, 1, vocab) for the last position only when `last_only`.
  Tokens fed after a row's real tokens (right padding) only affect that row's later positions and
  its cache; callers that pad throw such caches away.
- `model.device`: where input ids must live.
- `cache.select(index)`: index a 1-D LongTensor of row numbers -> a NEW cache holding those rows in
  that order; rows may repeat (forking n samples from one prefilled prompt) or be left out (finished
  sequences). `cache` itself stays valid and unchanged.
- `type(cache).stack(caches)`: one new cache whose rows are the rows of `caches`, in order. Prompts of
  different lengths are prefilled one by one (no padding leaks into any state) and then stacked to
  decode together; a KV cache therefore keeps a position (length) per row.
- `cache.batch_size`: number of rows.

Sampling is reproducible per sample: each sample draws from its own torch.Generator seeded by the
caller (the backend uses evalkit.requests.sample_seed), and a draw depends only on that sample's
logits and generator, so results do not depend on which other sequences share the batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor


class Cache(Protocol):
    @property
    def batch_size(self) -> int: ...

    def select(self, index: Tensor) -> Cache: ...

    @classmethod
    def stack(cls, caches: Sequence[Cache]) -> Cache: ...


class CachedLM(Protocol):
    device: torch.device

    def __call__(self, input_ids: Tensor) -> Tensor: ...

    def new_cache(self, batch_size: int) -> Cache: ...

    def forward_cached(self, input_ids: Tensor, cache: Cache, last_only: bool = False) -> Tensor: ...


def sample_tokens(
    logits: Tensor,
    temperature: float,
    top_p: float = 1.0,
    generators: Sequence[torch.Generator] | None = None,
) -> Tensor:
    """Next token per row of logits (b, vocab): argmax at temperature 0, else nucleus sampling.

    Each row draws one uniform number from its own generator and inverts its (top-p truncated)
    cumulative distribution, so a row's token does not depend on the other rows.
    """
    if temperature <= 0.0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        probs, order = probs.sort(dim=-1, descending=True, stable=True)
        cdf = probs.cumsum(-1)
        probs = probs.masked_fill(cdf - probs >= top_p, 0.0)  # keeps the smallest prefix reaching top_p
    else:
        order = None
    cdf = probs.cumsum(-1)
    if generators is None:
        u = torch.rand(logits.shape[0])
    else:
        u = torch.cat([torch.rand(1, generator=g) for g in generators])
    u = u.to(cdf.device) * cdf[:, -1]
    picked = torch.searchsorted(cdf, u.unsqueeze(-1), right=True).clamp_(max=cdf.shape[-1] - 1)
    return picked.squeeze(-1) if order is None else order.gather(-1, picked).squeeze(-1)


@torch.inference_mode()
def generate(
    model: CachedLM,
    input_ids: Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    eos_id: int | None = None,
) -> Tensor:
    """Continue each row of input_ids (b, t) or (t,); returns prompt + new ids, (b, t + new) or (t + new,).

    The prompt is prefilled once into the cache and every new token costs one cached step. Rows that
    produce `eos_id` are padded with it; generation stops early once every row has.
    """
    squeeze = input_ids.dim() == 1
    ids = input_ids.unsqueeze(0) if squeeze else input_ids
    ids = ids.to(model.device)
    generators = [torch.Generator().manual_seed(seed + row) for row in range(ids.shape[0])]
    cache = model.new_cache(ids.shape[0])
    logits = model.forward_cached(ids, cache, last_only=True)[:, -1]
    new: list[Tensor] = []
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    for step in range(max_new_tokens):
        token = sample_tokens(logits, temperature, top_p, generators)
        if eos_id is not None:
            token = token.masked_fill(done, eos_id)
            done |= token == eos_id
        new.append(token)
        if step + 1 == max_new_tokens or bool(done.all()):
            break
        logits = model.forward_cached(token.unsqueeze(-1), cache)[:, -1]
    out = torch.cat([ids, torch.stack(new, dim=1)], dim=1) if new else ids
    return out[0] if squeeze else out


@dataclass(frozen=True)
class GenerationJob:
    """One prompt to continue len(seeds) times; generation of a sample ends at eos, at a stop string
    appearing in its text, or after max_new_tokens tokens."""

    prompt_ids: Sequence[int]
    max_new_tokens: int
    seeds: Sequence[int]
    stop: Sequence[str] = ()


@dataclass
class Completion:
    """Generated token ids (without eos) and their text; finish is "eos", "stop" or "length"."""

    ids: list[int]
    text: str
    finish: str


@dataclass
class _Row:
    job: int
    sample: int
    generator: torch.Generator
    ids: list[int] = field(default_factory=list)
    text: str = ""
    finish: str | None = None


@torch.inference_mode()
def generate_batch(
    model: CachedLM,
    jobs: Sequence[GenerationJob],
    decode: Callable[[Sequence[int], Sequence[int]], str],
    eos_id: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 8,
) -> list[list[Completion]]:
    """Generate every sample of every job, `batch_size` sequences decoding together.

    decode(prompt_ids, new_ids) -> the text of new_ids as it reads after the prompt (used for stop
    strings). Each prompt is prefilled once, alone, and its cache forked for its samples; sequences
    join the running batch as others finish and leave it (cache.select) the step they finish, so a
    long sample never holds back the rest. Returns, per job, one Completion per seed.
    """
    results: list[list[Completion | None]] = [[None] * len(job.seeds) for job in jobs]
    waiting: deque[tuple[int, int]] = deque()
    for j, job in enumerate(jobs):
        for s in range(len(job.seeds)):
            if job.max_new_tokens <= 0:
                results[j][s] = Completion([], "", "length")
            else:
                waiting.append((j, s))
    prefilled: dict[int, tuple[Cache, Tensor]] = {}
    remaining_samples = {j: len(job.seeds) for j, job in enumerate(jobs)}
    rows: list[_Row] = []
    cache: Cache | None = None

    def prefill(j: int) -> tuple[Cache, Tensor]:
        if j not in prefilled:
            one = model.new_cache(1)
            ids = torch.tensor([list(jobs[j].prompt_ids)], dtype=torch.long, device=model.device)
            prefilled[j] = (one, model.forward_cached(ids, one, last_only=True)[:, -1])
        return prefilled[j]

    def record(new_rows: list[_Row], tokens: Tensor) -> None:
        for row, token in zip(new_rows, tokens.tolist(), strict=True):
            job = jobs[row.job]
            if token == eos_id:
                row.finish = "eos"
                continue
            row.ids.append(token)
            if job.stop:
                row.text = decode(job.prompt_ids, row.ids)
                if any(s and s in row.text for s in job.stop):
                    row.finish = "stop"
                    continue
            if len(row.ids) >= job.max_new_tokens:
                row.finish = "length"

    def leave(rows: list[_Row], cache: Cache | None) -> tuple[list[_Row], Cache | None]:
        """Finished sequences leave the batch (and its cache); their results are final."""
        if not any(row.finish for row in rows):
            return rows, cache
        for row in rows:
            if row.finish:
                text = row.text if jobs[row.job].stop else decode(jobs[row.job].prompt_ids, row.ids)
                results[row.job][row.sample] = Completion(row.ids, text, row.finish)
        keep = [i for i, row in enumerate(rows) if not row.finish]
        if not keep:
            return [], None
        return [rows[i] for i in keep], cache.select(torch.tensor(keep, device=model.device))

    while waiting or rows:
        # Admit waiting samples into free batch slots, sampling their first token from the prefill.
        admitted: list[tuple[int, int]] = []
        while waiting and len(rows) + len(admitted) < batch_size:
            admitted.append(waiting.popleft())
        new_caches: list[Cache] = []
        new_rows: list[_Row] = []
        first_logits: list[Tensor] = []
        for j in dict.fromkeys(j for j, _ in admitted):
            samples = [s for jj, s in admitted if jj == j]
            one, last = prefill(j)
            new_caches.append(one.select(torch.zeros(len(samples), dtype=torch.long, device=model.device)))
            first_logits.append(last.expand(len(samples), -1))
            for s in samples:
                generator = torch.Generator().manual_seed(jobs[j].seeds[s])
                new_rows.append(_Row(job=j, sample=s, generator=generator))
            remaining_samples[j] -= len(samples)
            if remaining_samples[j] == 0:
                del prefilled[j]
        if new_rows:
            logits = torch.cat(first_logits)
            record(new_rows, sample_tokens(logits, temperature, top_p, [r.generator for r in new_rows]))
            parts = ([cache] if cache is not None else []) + new_caches
            cache = type(parts[0]).stack(parts) if len(parts) > 1 else parts[0]
            rows, cache = leave(rows + new_rows, cache)
        if not rows:
            continue

        # One decoding step for every running sequence.
        last_tokens = torch.tensor([[row.ids[-1]] for row in rows], dtype=torch.long, device=model.device)
        logits = model.forward_cached(last_tokens, cache)[:, -1]
        record(rows, sample_tokens(logits, temperature, top_p, [r.generator for r in rows]))
        rows, cache = leave(rows, cache)
    return results  # type: ignore[return-value]  # every slot is filled once its sample finishes


@torch.inference_mode()
def score_continuations(
    model: CachedLM, context_ids: Sequence[int], continuations: Sequence[Sequence[int]]
) -> list[float]:
    """Sum of log p(token | everything before it) over each continuation's tokens, after context_ids.

    The context is run once; its cache is forked for all continuations, which are scored together
    (right-padded; padding comes after the tokens scored, so it changes nothing).
    """
    cache = model.new_cache(1)
    context = torch.tensor([list(context_ids)], dtype=torch.long, device=model.device)
    first = torch.log_softmax(model.forward_cached(context, cache, last_only=True)[0, -1], dim=-1)
    scores = [float(first[c[0]]) if len(c) else 0.0 for c in continuations]
    longer = [i for i, c in enumerate(continuations) if len(c) > 1]
    if not longer:
        return scores
    width = max(len(continuations[i]) - 1 for i in longer)
    inputs = torch.zeros(len(longer), width, dtype=torch.long)
    targets = torch.zeros(len(longer), width, dtype=torch.long)
    mask = torch.zeros(len(longer), width, dtype=torch.bool)
    for row, i in enumerate(longer):
        tokens = torch.tensor(list(continuations[i]), dtype=torch.long)
        inputs[row, : len(tokens) - 1] = tokens[:-1]
        targets[row, : len(tokens) - 1] = tokens[1:]
        mask[row, : len(tokens) - 1] = True
    forked = cache.select(torch.zeros(len(longer), dtype=torch.long, device=model.device))
    logits = model.forward_cached(inputs.to(model.device), forked)
    targets, mask = targets.to(logits.device), mask.to(logits.device)
    token_logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
    rest = (token_logp * mask).sum(-1).tolist()
    for row, i in enumerate(longer):
        scores[i] += rest[row]
    return scores
