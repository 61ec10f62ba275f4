"""Throughput against context length: prefill tokens/s, decode ms/token and peak memory per architecture.

Three architectures, random weights, batch 1:

- mamba2: the Mamba-2 (SSD) model;
- swa:    the Mistral-architecture transformer with its sliding window;
- full:   the same transformer with the window off (full causal attention).

Each (architecture, context) point is measured the way generation runs: the context is prefilled into a
fresh cache in one call with last-position logits, then `decode_tokens` tokens are decoded one at a time
through that cache. After `warmup` untimed rounds, `repeats` timed rounds give the median and its min-max
spread. Peak memory covers the whole point: resident set size on CPU (with the weights and the runtime),
torch.cuda.max_memory_allocated on GPU.

A curve stops cleanly where memory runs out: before each size, the peak is extrapolated from the sizes
measured so far, and a size predicted to exceed the budget (available memory, or --max-memory) is not
run; an out-of-memory error or a measured peak above the budget also stops the curve. Such sizes are
recorded with their status instead of numbers.
"""

from __future__ import annotations

import csv
import ctypes
import dataclasses
import datetime as dt
import gc
import json
import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from evalkit.errors import EvalkitError

ARCHS = ("mamba2", "swa", "full")
MIB = 1 << 20
# Share of the memory budget a size may be predicted to use; the rest absorbs extrapolation error.
FIT_MARGIN = 0.9


class BenchError(EvalkitError, ValueError):
    """A bad preset, config file or option."""


# ------------------------------------------------------------------------------------------ configs


@dataclass(frozen=True)
class BenchConfig:
    """Model shapes and the measurement plan. `transformer` holds MistralConfig fields; its
    `sliding_window` is the swa architecture's window (the full architecture drops it)."""

    name: str
    mamba2: dict
    transformer: dict
    contexts: tuple[int, ...]
    dtype: str = "float32"
    repeats: int = 3
    warmup: int = 1
    decode_tokens: int = 16

    def __post_init__(self) -> None:
        if not self.transformer.get("sliding_window"):
            raise BenchError(f"config {self.name}: transformer.sliding_window must be set (the swa window)")
        if not self.contexts or any(c < 2 for c in self.contexts):
            raise BenchError(f"config {self.name}: contexts must be sizes of at least 2 tokens")
        if self.repeats < 1 or self.warmup < 0 or self.decode_tokens < 1:
            raise BenchError(f"config {self.name}: need repeats >= 1, warmup >= 0, decode_tokens >= 1")
        if self.dtype not in _DTYPES:
            raise BenchError(f"config {self.name}: dtype must be one of {', '.join(_DTYPES)}")


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _log2_range(lo: int, hi: int) -> tuple[int, ...]:
    return tuple(2**i for i in range(int(math.log2(lo)), int(math.log2(hi)) + 1))


PRESETS: dict[str, BenchConfig] = {
    # For tests: a few seconds on one core; the window is small enough that contexts pass it.
    "tiny": BenchConfig(
        name="tiny",
        mamba2=dict(d_model=64, n_layers=2, vocab_size=512, d_state=16, headdim=16, n_groups=1, chunk_size=32),
        transformer=dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=128, vocab_size=512,
                         sliding_window=64),
        contexts=_log2_range(32, 512),
        repeats=2,
        warmup=1,
        decode_tokens=4,
    ),
    # The default: small models whose curves already show the shapes of the 7B ones, within minutes on 2 cores.
    "cpu": BenchConfig(
        name="cpu",
        mamba2=dict(d_model=256, n_layers=4, vocab_size=32768, d_state=64, headdim=64, n_groups=1),
        transformer=dict(dim=256, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=64, hidden_dim=896,
                         vocab_size=32768, sliding_window=1024),
        contexts=_log2_range(512, 16384),
        repeats=3,
        warmup=1,
        decode_tokens=16,
    ),
    # The real shapes: Codestral Mamba 7B, and Mistral 7B v0.1 with its 4096-token window. Needs a GPU.
    "7b": BenchConfig(
        name="7b",
        mamba2=dict(d_model=4096, n_layers=64, vocab_size=32768, d_state=128, headdim=64, n_groups=8),
        transformer=dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128, hidden_dim=14336,
                         vocab_size=32000, rope_theta=10000.0, sliding_window=4096),
        contexts=_log2_range(512, 65536),
        dtype="bfloat16",
        repeats=3,
        warmup=1,
        decode_tokens=32,
    ),
}


def load_config(preset: str | None = None, config_file: str | Path | None = None) -> BenchConfig:
    """A named preset, or a JSON file of BenchConfig fields; a file may start from `"preset": NAME`."""
    if config_file is None:
        name = preset or "cpu"
        if name not in PRESETS:
            raise BenchError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
        return PRESETS[name]
    path = Path(config_file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BenchError(f"cannot read bench config {path}: {e}") from None
    base = data.pop("preset", preset)
    fields = dataclasses.asdict(load_config(base)) if base else {}
    for key in ("mamba2", "transformer"):
        if key in data and key in fields:
            data[key] = {**fields[key], **data[key]}
    fields.update(data)
    fields.setdefault("name", path.stem)
    if base and "name" not in data:
        fields["name"] = f"{path.stem} (from {base})"
    unknown = set(fields) - {f.name for f in dataclasses.fields(BenchConfig)}
    missing = {"mamba2", "transformer", "contexts"} - set(fields)
    if unknown or missing:
        raise BenchError(f"bench config {path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    fields["contexts"] = tuple(int(c) for c in fields["contexts"])
    return BenchConfig(**fields)


def build_model(arch: str, cfg: BenchConfig, device: torch.device) -> torch.nn.Module:
    """A random-weight model of `arch`, initialised directly on `device`, in eval mode."""
    from evalkit.models.mamba2 import Mamba2Config, Mamba2LM
    from evalkit.models.mistral import Mistral, MistralConfig

    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: a 7B init on the CPU takes minutes
        if arch == "mamba2":
            model = Mamba2LM(Mamba2Config(**cfg.mamba2))
        elif arch in ("swa", "full"):
            window = cfg.transformer["sliding_window"] if arch == "swa" else None
            model = Mistral(MistralConfig(**{**cfg.transformer, "sliding_window": window}))
        else:
            raise BenchError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    return model.to(_DTYPES[cfg.dtype]).eval().requires_grad_(False)


def parameter_bytes(arch: str, cfg: BenchConfig) -> int:
    """Weight bytes of `arch` in the config's dtype, counted on the meta device (nothing allocated)."""
    model = build_model(arch, cfg, torch.device("meta"))
    return sum(p.numel() * p.element_size() for p in model.parameters())


def shape_summary(arch: str, cfg: BenchConfig) -> str:
    if arch == "mamba2":
        m = cfg.mamba2
        return f"mamba2 d{m['d_model']} L{m['n_layers']} N{m.get('d_state', 128)}"
    t = cfg.transformer
    window = f" W{t['sliding_window']}" if arch == "swa" else " full"
    return f"{arch} d{t['dim']} L{t['n_layers']} h{t['n_heads']}/kv{t['n_kv_heads']}{window}"


# ------------------------------------------------------------------------------------------ memory


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets the peak resident size (VmHWM) to the current one
        return True
    except OSError:
        return False


def return_freed_memory_to_os() -> None:
    """Serve large allocations with mmap (glibc) so freed tensors leave the resident set and each size's
    peak is its own, not an earlier size's leftovers."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory over a block: torch.cuda.max_memory_allocated on GPU; on CPU the kernel's peak
    resident size (VmHWM, reset at entry), or a sampling thread where it cannot be reset."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak = 0
        self.method = ""

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "torch.cuda.max_memory_allocated"
        elif _reset_hwm():
            self.method = "peak resident set size (VmHWM)"
        else:
            self.method = "resident set size sampled every 1 ms"
            self._stop = threading.Event()
            self.peak = _rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("peak"):
            self.peak = _hwm_bytes()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())


def memory_in_use(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else _rss_bytes()


def memory_budget(device: torch.device, max_memory_gib: float | None) -> int:
    """Bytes a point may peak at: what is in use plus what is free, or --max-memory when given."""
    if max_memory_gib is not None:
        return int(max_memory_gib * (1 << 30))
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_allocated(device)
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return info["MemAvailable"] + _rss_bytes()


def predict_peak(done: Sequence[tuple[int, int]], base: int, context: int) -> int | None:
    """Extrapolate the peak at `context` from (context, peak) points measured so far.

    What a point adds above `base` (weights, runtime) grows as a power of the context between 1 (caches,
    activations) and 2 (materialised attention); the exponent comes from the last two points.
    """
    if not done:
        return None
    (c2, p2) = done[-1]
    extra2 = max(p2 - base, 1)
    exponent = 1.0
    if len(done) >= 2:
        c1, p1 = done[-2]
        extra1 = max(p1 - base, 1)
        if c2 > c1 and extra2 > extra1:
            exponent = min(2.0, max(1.0, math.log(extra2 / extra1) / math.log(c2 / c1)))
    return int(base + extra2 * (context / c2) ** exponent)


def _is_oom(e: BaseException) -> bool:
    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(e, RuntimeError) and ("out of memory" in str(e) or "can't allocate memory" in str(e)
                                            or "not enough memory" in str(e))


# ------------------------------------------------------------------------------------------ measuring


@dataclass
class BenchRow:
    """One (architecture, context) point. Status: ok, out of memory, over budget, would not fit."""

    arch: str
    context: int
    status: str
    prefill_tok_s: float | None = None
    prefill_tok_s_min: float | None = None
    prefill_tok_s_max: float | None = None
    decode_ms_per_tok: float | None = None
    decode_ms_per_tok_min: float | None = None
    decode_ms_per_tok_max: float | None = None
    peak_mem_mib: float | None = None
    cache_mib: float | None = None
    seconds: float | None = None  # wall time spent on the point, warm-up included
    note: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _round(model: torch.nn.Module, ids: torch.Tensor, decode_tokens: int) -> tuple[float, float, int]:
    """One prefill of `ids` into a fresh cache, then greedy decode steps: (prefill s, median decode s, cache bytes)."""
    device = ids.device
    cache = model.new_cache(1)
    _sync(device)
    start = time.perf_counter()
    logits = model.forward_cached(ids, cache, last_only=True)
    _sync(device)
    prefill = time.perf_counter() - start
    token = logits[:, -1].argmax(-1, keepdim=True)
    steps = []
    for _ in range(decode_tokens):
        start = time.perf_counter()
        token = model.forward_cached(token, cache, last_only=True)[:, -1].argmax(-1, keepdim=True)
        _sync(device)
        steps.append(time.perf_counter() - start)
    return prefill, statistics.median(steps), cache.nbytes()


def measure_point(model: torch.nn.Module, arch: str, context: int, cfg: BenchConfig, vocab: int,
                  device: torch.device) -> BenchRow:
    """Warm up, then time `cfg.repeats` rounds at `context`; peak memory over all of them."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(context)
    ids = torch.randint(0, vocab, (1, context), generator=generator).to(device)
    with torch.inference_mode(), PeakMemory(device) as peak:
        for _ in range(cfg.warmup):
            _round(model, ids, min(cfg.decode_tokens, 4))
        rounds = [_round(model, ids, cfg.decode_tokens) for _ in range(cfg.repeats)]
    prefill = [context / r[0] for r in rounds]
    decode = [1000 * r[1] for r in rounds]
    return BenchRow(
        arch=arch, context=context, status="ok",
        prefill_tok_s=statistics.median(prefill), prefill_tok_s_min=min(prefill), prefill_tok_s_max=max(prefill),
        decode_ms_per_tok=statistics.median(decode), decode_ms_per_tok_min=min(decode),
        decode_ms_per_tok_max=max(decode), peak_mem_mib=peak.peak / MIB, cache_mib=rounds[-1][2] / MIB,
        seconds=round(time.perf_counter() - started, 2), note=peak.method,
    )


def measure_arch(arch: str, cfg: BenchConfig, device: torch.device, budget_override: float | None,
                 tick: Callable[..., None]) -> list[BenchRow]:
    """The curve of one architecture, stopped cleanly at the first size that does not fit."""
    contexts = sorted(cfg.contexts)
    weights = parameter_bytes(arch, cfg)
    budget = memory_budget(device, budget_override)
    if memory_in_use(device) + weights > FIT_MARGIN * budget:
        why = f"weights alone need {weights / MIB:.0f} MiB; budget {budget / MIB:.0f} MiB"
        for _ in contexts:
            tick(arch, done=True)
        return [BenchRow(arch, c, "would not fit", note=why) for c in contexts]
    model = build_model(arch, cfg, device)
    vocab = cfg.mamba2["vocab_size"] if arch == "mamba2" else cfg.transformer["vocab_size"]
    base = memory_in_use(device)
    rows: list[BenchRow] = []
    done: list[tuple[int, int]] = []
    stop: tuple[str, str] | None = None
    try:
        for context in contexts:
            if rows:
                tick(arch, done=True)
            tick(f"{arch} {context}", done=False)
            if stop is None:
                predicted = predict_peak(done, base, context)
                if predicted is not None and predicted > FIT_MARGIN * budget:
                    stop = ("would not fit", f"predicted peak {predicted / MIB:.0f} MiB > {FIT_MARGIN:.0%} of "
                                             f"the {budget / MIB:.0f} MiB budget")
            if stop is not None:
                rows.append(BenchRow(arch, context, stop[0], note=stop[1]))
                continue
            try:
                row = measure_point(model, arch, context, cfg, vocab, device)
            except Exception as e:
                if not _is_oom(e):
                    raise
                stop = ("out of memory", f"{type(e).__name__} at {context} tokens")
                rows.append(BenchRow(arch, context, stop[0], note=str(e).splitlines()[0][:200]))
                _free(device)
                continue
            if row.peak_mem_mib * MIB > budget:
                row.status = "over budget"
                stop = ("would not fit", f"the {context}-token point peaked at {row.peak_mem_mib:.0f} MiB, over the "
                                         f"{budget / MIB:.0f} MiB budget")
            rows.append(row)
            done.append((context, int(row.peak_mem_mib * MIB)))
        tick(arch, done=True)
    finally:
        del model
        _free(device)
    return rows


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ the run


@dataclass
class BenchResult:
    meta: dict
    rows: list[BenchRow] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"meta": self.meta, "rows": [dataclasses.asdict(r) for r in self.rows]}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_bench(cfg: BenchConfig, device: str = "cpu", threads: int | None = None,
              archs: Sequence[str] = ARCHS, max_memory_gib: float | None = None, progress: bool = True) -> BenchResult:
    """Measure every architecture in `archs` at every context of `cfg`."""
    unknown = [a for a in archs if a not in ARCHS]
    if unknown:
        raise BenchError(f"unknown architecture(s) {', '.join(unknown)}; choose from {', '.join(ARCHS)}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BenchError("--device cuda, but torch sees no CUDA device")
    if threads:
        torch.set_num_threads(threads)
    return_freed_memory_to_os()
    name = device_name(dev)
    threads_used = torch.get_num_threads()
    plural = "s" if threads_used != 1 else ""
    where = f"{dev.type} ({name}, {threads_used} thread{plural})" if dev.type == "cpu" else f"{dev.type} ({name})"
    meta = {
        "preset": cfg.name,
        "config": dataclasses.asdict(cfg),
        "archs": list(archs),
        "shapes": {a: shape_summary(a, cfg) for a in archs},
        "weights_mib": {a: parameter_bytes(a, cfg) / MIB for a in archs},
        "device": dev.type,
        "device_name": name,
        "threads": threads_used,
        "cpu_count": os.cpu_count(),
        "dtype": cfg.dtype,
        "torch": torch.__version__,
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "decode_tokens": cfg.decode_tokens,
        "batch_size": 1,
        "memory": "torch.cuda.max_memory_allocated" if dev.type == "cuda" else "peak resident set size of the process",
        "max_memory_gib": max_memory_gib,
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "subtitle": f"{'; '.join(shape_summary(a, cfg) for a in archs)} | {cfg.dtype} | {where}",
    }
    gc.collect()
    meta["memory_before_models_mib"] = memory_in_use(dev) / MIB  # the runtime's share of each CPU peak
    result = BenchResult(meta)
    start = time.perf_counter()
    bar = tqdm(total=len(archs) * len(cfg.contexts), unit="point", disable=not progress, dynamic_ncols=True)
    try:
        def tick(what: str, done: bool) -> None:
            """Name the point being measured, or count one as finished."""
            if done:
                bar.update(1)
            else:
                bar.set_description(what)

        for arch in archs:
            result.rows += measure_arch(arch, cfg, dev, max_memory_gib, tick)
    finally:
        bar.close()
    meta["seconds"] = round(time.perf_counter() - start, 1)
    return result


# ------------------------------------------------------------------------------------------ outputs


CSV_FIELDS = [f.name for f in dataclasses.fields(BenchRow)]


def write_outputs(result: BenchResult, out_dir: str | Path) -> list[Path]:
    """bench.json, bench.csv and the three PNG plots (prefill, decode, memory) in `out_dir`."""
    from evalkit.plots import bench_chart

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "bench.json", out / "bench.csv"]
    paths[0].write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")
    with open(paths[1], "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(dataclasses.asdict(r) for r in result.rows)
    rows = [dataclasses.asdict(r) for r in result.rows]
    for panel in ("prefill", "decode", "memory"):
        path = out / f"{panel}.png"
        path.write_bytes(bench_chart(rows, panel, result.meta["subtitle"]))
        paths.append(path)
    return paths


def format_summary(result: BenchResult) -> str:
    """A plain-text table of the medians, for the terminal."""
    lines = [result.meta["subtitle"], ""]
    header = f"{'arch':7s} {'context':>8s} {'prefill tok/s':>14s} {'decode ms/tok':>14s} {'peak MiB':>9s}  status"
    lines.append(header)
    for r in result.rows:
        if r.status in ("ok", "over budget"):
            lines.append(f"{r.arch:7s} {r.context:8d} {r.prefill_tok_s:14.0f} {r.decode_ms_per_tok:14.2f} "
                         f"{r.peak_mem_mib:9.0f}  {r.status}")
        else:
            lines.append(f"{r.arch:7s} {r.context:8d} {'-':>14s} {'-':>14s} {'-':>9s}  {r.status}: {r.note}")
    lines.append(f"\n{result.meta['seconds']} s")
    return "\n".join(lines)
