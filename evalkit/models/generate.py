"""Generation and scoring shared by the in-repo models (Mamba-2, Mistral), through the model's cache.

The model protocol, which both models implement:

- `model(input_ids)`: input_ids LongTensor (b, t) -> logits float32 (b, t, vocab); a full forward from
  an empty state, no cache.
- `model.new_cache(batch_size, length=0) -> cache`: an empty cache for `batch_size` rows, with room for
  positions 0 .. length-1 allocated up front (a KV cache grows otherwise; a recurrent state never does).
- `model.forward_cached(input_ids, cache, last_only=False) -> logits`: each row consumes its t new
  tokens after what that row of the cache already holds, at that row's own position (rows of one
  cache may hold sequences of different lengths), and the cache is updated to include them. Returns
  float32 logits (b, t, vocab), or (b, 1, vocab) for the last position only when `last_only`.
  Tokens fed after a row's real tokens (right padding) only affect that row's later positions and
  its cache; callers that pad throw such caches away.
- `model.decode_step(tokens, cache) -> logits`: one token per row, tokens (b,) -> float32 (b, vocab),
  the same numbers as forward_cached with t = 1, in fixed shapes and without reading anything back to
  the host, so that it can be captured in a CUDA graph. The cache must have room (new_cache's length).
- `model.device`: where input ids must live.
- `cache.select(index)`: index a 1-D LongTensor of row numbers -> a NEW cache holding those rows in
  that order; rows may repeat (forking n samples from one prefilled prompt). `cache` stays unchanged.
- `type(cache).stack(caches)`: one new cache whose rows are the rows of `caches`, in order.
- `cache.head(n)`: a view of the first n rows; running the model on it updates `cache` (it must have
  room already: a view cannot grow).
- `cache.assign(index, source)`: rows `index` of `cache` become copies of the rows of `source` (a
  one-row source fills them all); how a prompt prefilled alone joins a running batch.
- `cache.batch_size`, `cache.nbytes()`: number of rows, bytes held.

Batched generation keeps one cache for `batch_size` rows for the whole call. Each prompt is prefilled
alone (no padding leaks into any state) and copied into free rows, one per sample; finished sequences
leave at once and the running rows after them move up, so a step only computes running rows.

Sampling is reproducible per sample: each sample draws from its own torch.Generator seeded by the
caller (the backend uses evalkit.requests.sample_seed), and a draw depends only on that sample's
logits and generator, so results do not depend on which other sequences share the batch (up to float
rounding: a batch of 8 rounds its matmuls differently from a batch of 1, by ~1e-6 of a logit).
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor


class Cache(Protocol):
    @property
    def batch_size(self) -> int: ...

    def nbytes(self) -> int: ...

    def select(self, index: Tensor) -> Cache: ...

    @classmethod
    def stack(cls, caches: Sequence[Cache]) -> Cache: ...

    def head(self, n: int) -> Cache: ...

    def assign(self, index: Tensor, source: Cache) -> None: ...


class CachedLM(Protocol):
    device: torch.device

    def __call__(self, input_ids: Tensor) -> Tensor: ...

    def new_cache(self, batch_size: int, length: int = 0) -> Cache: ...

    def forward_cached(self, input_ids: Tensor, cache: Cache, last_only: bool = False) -> Tensor: ...

    def decode_step(self, tokens: Tensor, cache: Cache) -> Tensor: ...


def sample_tokens(
    logits: Tensor,
    temperature: float,
    top_p: float = 1.0,
    generators: Sequence[torch.Generator] | None = None,
) -> Tensor:
    """Next token per row of logits (b, vocab): argmax at temperature 0, else nucleus sampling.

    Each row draws one uniform number from its own generator and inverts its cumulative distribution
    over the tokens top-p keeps, in vocabulary order, so a row's token does not depend on the other
    rows. Vocabulary order, not order of probability: a ~1e-6 change of the logits (another batch
    size) reorders near-equal probabilities, and with a flat distribution (32768 tokens) a draw in
    sorted order then picked another token ~10% of the time (measured), in vocabulary order about never.
    """
    if temperature <= 0.0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        probs = probs * top_p_mask(probs, top_p)
    cdf = probs.cumsum(-1)
    if generators is None:
        u = torch.rand(logits.shape[0])
    else:
        u = torch.cat([torch.rand(1, generator=g) for g in generators])
    u = u.to(cdf.device) * cdf[:, -1]
    return torch.searchsorted(cdf, u.unsqueeze(-1), right=True).clamp_(max=cdf.shape[-1] - 1).squeeze(-1)


def top_p_mask(probs: Tensor, top_p: float) -> Tensor:
    """True for the smallest set of most probable tokens whose mass reaches top_p, per row of probs (b, vocab).

    The set is every token at or above a threshold: the largest one whose tokens still carry top_p (tokens
    tied at it are all kept). A GPU sorts each row to find it. On the CPU a sort of 32768 tokens costs
    more than the model's decode step (10 rows, one thread: 26 ms), so the threshold is found by bisection
    on the float32 bit patterns (ordered like the values, for values >= 0): 31 masked sums, 8 ms.
    """
    if probs.device.type != "cpu":
        descending = probs.sort(dim=-1, descending=True).values
        kept = (descending.cumsum(-1) - descending < top_p).sum(-1, keepdim=True)
        return probs >= descending.gather(-1, kept - 1)
    bits = probs.view(torch.int32)
    lo = torch.zeros_like(bits[:, :1])  # mass(bits >= lo) >= top_p: all of it
    hi = bits.amax(-1, keepdim=True) + 1  # mass(bits >= hi) = 0 < top_p
    for _ in range(31):  # hi - lo < 2**31 halves to 1
        mid = lo + (hi - lo) // 2
        # Multiplying by the mask as uint8 keeps to the vectorised kernels: torch.where and a bool factor
        # take a per-element branch, ~1.1 ms instead of 0.06 for a half-set mask of 10 x 32768.
        enough = (probs * (bits >= mid).view(torch.uint8)).sum(-1, keepdim=True) >= top_p
        lo, hi = torch.where(enough, mid, lo), torch.where(enough, hi, mid)
    return bits >= lo


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
    """Generated token ids (without eos) and their text.

    finish: what ended it, "eos", "stop" (a stop string) or "length" (max_new_tokens);
    finish_reason: the same as OpenAI reports it, "stop" (eos or a stop string) or "length";
    n_tokens: tokens generated, eos included.
    """

    ids: list[int]
    text: str
    finish: str
    finish_reason: str = field(init=False)
    n_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.finish_reason = "length" if self.finish == "length" else "stop"
        self.n_tokens = len(self.ids) + (self.finish == "eos")


@torch.inference_mode()
def generate_batch(
    model: CachedLM,
    jobs: Sequence[GenerationJob],
    decode: Callable[[Sequence[int], Sequence[int]], str],
    eos_id: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    cuda_graphs: bool = False,
) -> list[list[Completion]]:
    """Generate every sample of every job, `batch_size` sequences decoding together.

    decode(prompt_ids, new_ids) -> the text of new_ids as it reads after the prompt (used for stop
    strings). Each prompt is prefilled once, alone, and its cache copied into a free row for each of its
    samples; sequences join the running batch as others finish and leave it the step they finish, so a
    long sample never holds back the rest. Returns, per job, one Completion per seed.

    cuda_graphs: decode through `model.decode_step` captured in CUDA graphs, one per batch size bucket
    (a GPU step then costs one launch instead of hundreds of small kernels). Without CUDA, or if capture
    fails, the same fixed-shape step runs eagerly; the tokens are the same either way.
    """
    return BatchGenerator(model, jobs, decode, eos_id, temperature, top_p, batch_size, cuda_graphs).run()


@dataclass
class SampleRow:
    """A running sample: which job and seed, its generator and what it has generated so far."""

    job: int
    sample: int
    generator: torch.Generator
    ids: list[int] = field(default_factory=list)
    text: str = ""
    finish: str | None = None  # "eos", "stop" (a stop string) or "length" once it is finished

    def take(self, token: int, job: GenerationJob, is_eos: bool,
             decode: Callable[[Sequence[int], Sequence[int]], str]) -> None:
        """Append the sampled `token` (unless it ends the sequence) and decide whether the sample is finished;
        `decode(prompt_ids, new_ids)` is the new text as it reads after the prompt."""
        if is_eos:
            self.finish = "eos"
            return
        self.ids.append(token)
        if job.stop:
            self.text = decode(job.prompt_ids, self.ids)
            if any(s and s in self.text for s in job.stop):
                self.finish = "stop"
                return
        if len(self.ids) >= job.max_new_tokens:
            self.finish = "length"


def prefill(model: CachedLM, prompt_ids: Sequence[int]) -> tuple[Cache, Tensor]:
    """A prompt alone into a fresh one-row cache: (the cache, its last position's logits (1, vocab))."""
    cache = model.new_cache(1)
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=model.device)
    return cache, model.forward_cached(ids, cache, last_only=True)[:, -1]


def decode_one_token(model: CachedLM, tokens: Tensor, cache: Cache) -> Tensor:
    """The plain step: logits (n, vocab) for one token per row of tokens (n,), through forward_cached."""
    return model.forward_cached(tokens[:, None], cache)[:, -1]


class BatchGenerator:
    """Continuous batching over a fixed set of cache rows (slots).

    Row i of `rows` decodes in row i of `cache`, whose last token is tokens[i]; running rows always
    occupy rows 0 .. len(rows)-1. A step: admit waiting samples into free rows, decode one token for
    every running row, record it, retire finished rows (the rows after them move up).
    """

    def __init__(
        self,
        model: CachedLM,
        jobs: Sequence[GenerationJob],
        decode: Callable[[Sequence[int], Sequence[int]], str],
        eos_id: int,
        temperature: float,
        top_p: float,
        batch_size: int,
        cuda_graphs: bool,
    ) -> None:
        self.model, self.jobs, self.decode, self.eos_id = model, jobs, decode, eos_id
        self.temperature, self.top_p, self.batch_size = temperature, top_p, batch_size
        self.results: list[list[Completion | None]] = [[None] * len(job.seeds) for job in jobs]
        self.waiting: deque[tuple[int, int]] = deque()
        for j, job in enumerate(jobs):
            for s in range(len(job.seeds)):
                if job.max_new_tokens <= 0:
                    self.results[j][s] = Completion([], "", "length")
                else:
                    self.waiting.append((j, s))
        self.prefilled: dict[int, tuple[Cache, Tensor]] = {}  # job -> its prompt's cache and logits
        self.unadmitted = {j: len(job.seeds) for j, job in enumerate(jobs)}  # samples left to admit
        self.rows: list[SampleRow] = []
        # Rows for the samples that can run at once, each with room for every position a sample reaches:
        # the cache is allocated once and never moves.
        slots = max(1, min(batch_size, len(self.waiting)))
        length = max((len(job.prompt_ids) + job.max_new_tokens for job in jobs), default=1)
        self.cache = model.new_cache(slots, length)
        self.tokens = torch.zeros(slots, dtype=torch.long, device=model.device)
        self.step: Callable[[int], Tensor] = self._plain_step
        if cuda_graphs:
            self.step = self._static_step
            if model.device.type == "cuda":
                self.step = CudaGraphStep(model, self.cache, self.tokens)

    def run(self) -> list[list[Completion]]:
        while self.waiting or self.rows:
            self.admit()
            if self.rows:
                n = len(self.rows)
                tokens = self.sample(self.step(n), self.rows)
                self.tokens[:n] = tokens
                self.record(self.rows, tokens.tolist())
                self.retire()
        return self.results  # type: ignore[return-value]  # every slot is filled once its sample finishes

    def _plain_step(self, n: int) -> Tensor:
        return decode_one_token(self.model, self.tokens[:n], self.cache.head(n))

    def _static_step(self, n: int) -> Tensor:
        return self.model.decode_step(self.tokens[:n], self.cache.head(n))

    def admit(self) -> None:
        """Waiting samples take the free rows: their prompt's cache is copied in (prefilled once per job),
        and their first token is sampled from the prompt's logits."""
        first = len(self.rows)
        logits = []
        while self.waiting and len(self.rows) < self.batch_size:
            j, s = self.waiting.popleft()
            if j not in self.prefilled:
                self.prefilled[j] = prefill(self.model, self.jobs[j].prompt_ids)
            cache, last = self.prefilled[j]
            self.cache.assign(torch.tensor([len(self.rows)], device=self.model.device), cache)
            logits.append(last)
            self.rows.append(SampleRow(j, s, torch.Generator().manual_seed(self.jobs[j].seeds[s])))
            self.unadmitted[j] -= 1
            if self.unadmitted[j] == 0:
                del self.prefilled[j]
        if logits:
            new = self.rows[first:]
            tokens = self.sample(torch.cat(logits), new)
            self.tokens[first : len(self.rows)] = tokens
            self.record(new, tokens.tolist())
            self.retire()

    def sample(self, logits: Tensor, rows: list[SampleRow]) -> Tensor:
        return sample_tokens(logits, self.temperature, self.top_p, [row.generator for row in rows])

    def record(self, rows: list[SampleRow], tokens: list[int]) -> None:
        """Append each row's new token and decide whether the row is finished."""
        for row, token in zip(rows, tokens, strict=True):
            row.take(token, self.jobs[row.job], token == self.eos_id, self.decode)

    def retire(self) -> None:
        """Finished rows leave with their results; the running rows after them move up to close the gaps."""
        if not any(row.finish for row in self.rows):
            return
        for row in self.rows:
            if row.finish:
                job = self.jobs[row.job]
                text = row.text if job.stop else self.decode(job.prompt_ids, row.ids)
                self.results[row.job][row.sample] = Completion(row.ids, text, row.finish)
        keep = [i for i, row in enumerate(self.rows) if not row.finish]
        moves = [(dst, src) for dst, src in enumerate(keep) if dst != src]
        if moves:
            dst, src = (torch.tensor(m, device=self.model.device) for m in zip(*moves, strict=True))
            self.cache.assign(dst, self.cache.select(src))
            self.tokens[dst] = self.tokens[src]
        self.rows = [self.rows[i] for i in keep]


class CudaGraphStep:
    """`model.decode_step` captured in CUDA graphs and replayed: (n running rows) -> logits (n, vocab).

    One graph per bucket of rows (1, 2, 4, 8, ... up to the cache's rows), all captured up front, before
    any row holds a sequence (capture runs the step, which writes to the cache); n rows replay the
    smallest bucket that holds them, the extra rows computing on free rows that nobody reads. The graphs
    read the tokens and the cache in place, so a step is: write tokens, replay, read the logits. They
    share one memory pool: each graph's logits are read before the next replay.
    """

    def __init__(self, model: CachedLM, cache: Cache, tokens: Tensor) -> None:
        self.buckets = [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) if b < cache.batch_size] + [cache.batch_size]
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, Tensor]] = {}
        self.eager = lambda n: model.decode_step(tokens[:n], cache.head(n))
        try:
            pool = torch.cuda.graph_pool_handle()
            for b in reversed(self.buckets):  # largest first: the smaller ones fit in its memory
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):  # warm-up outside the graph (cuBLAS workspaces, allocator)
                    for _ in range(2):
                        self.eager(b)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    logits = self.eager(b)
                self.graphs[b] = (graph, logits)
        except RuntimeError as e:  # an op that cannot be captured: decode eagerly, same numbers
            warnings.warn(f"CUDA graph capture failed, decoding without graphs: {e}", stacklevel=3)
            self.graphs.clear()

    def __call__(self, n: int) -> Tensor:
        if not self.graphs:
            return self.eager(n)
        bucket = next(b for b in self.buckets if b >= n)
        graph, logits = self.graphs[bucket]
        graph.replay()
        return logits[:n]


@torch.inference_mode()
def score_tokens(
    model: CachedLM, context_ids: Sequence[int], continuations: Sequence[Sequence[int]], rows: int | None = None
) -> list[tuple[float, bool]]:
    """(sum of log p(token | everything before it), whether every token was the argmax) of each continuation
    after `context_ids`.

    The context is run once; its cache is forked for the continuations, which are scored `rows` at a time (all
    together when None), right-padded: the padding comes after the tokens scored, so it changes nothing.
    """
    cache = model.new_cache(1)
    context = torch.tensor([list(context_ids)], dtype=torch.long, device=model.device)
    last = model.forward_cached(context, cache, last_only=True)[0, -1].float()
    first_logp, first_best = torch.log_softmax(last, dim=-1), int(last.argmax())
    results = [(float(first_logp[c[0]]), first_best == c[0]) if len(c) else (0.0, True) for c in continuations]
    longer = [i for i, c in enumerate(continuations) if len(c) > 1]
    step = rows or max(1, len(longer))
    for start in range(0, len(longer), step):
        chunk = longer[start : start + step]
        width = max(len(continuations[i]) - 1 for i in chunk)
        inputs = torch.zeros(len(chunk), width, dtype=torch.long)
        targets = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.bool)
        for row, i in enumerate(chunk):
            tokens = torch.tensor(list(continuations[i]), dtype=torch.long)
            inputs[row, : len(tokens) - 1] = tokens[:-1]
            targets[row, : len(tokens) - 1] = tokens[1:]
            mask[row, : len(tokens) - 1] = True
        forked = cache.select(torch.zeros(len(chunk), dtype=torch.long, device=model.device))
        logits = model.forward_cached(inputs.to(model.device), forked).float()
        targets, mask = targets.to(logits.device), mask.to(logits.device)
        token_logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        sums = (token_logp * mask).sum(-1).tolist()
        greedy = ((logits.argmax(-1) == targets) | ~mask).all(-1).tolist()
        for row, i in enumerate(chunk):
            head_logp, head_greedy = results[i]
            results[i] = (head_logp + sums[row], head_greedy and greedy[row])
    return results


def score_continuations(
    model: CachedLM, context_ids: Sequence[int], continuations: Sequence[Sequence[int]]
) -> list[float]:
    """Sum of log p(token | everything before it) over each continuation's tokens, after context_ids."""
    return [logp for logp, _ in score_tokens(model, context_ids, continuations)]
