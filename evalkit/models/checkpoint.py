"""Reading checkpoints from disk: config files and safetensors weights, validated before use.

Two layouts are understood:

- Hugging Face: `config.json` plus `model.safetensors`, or shards `model-0000x-of-0000n.safetensors`
  listed in `model.safetensors.index.json`.
- Native (mistral-inference): `params.json` plus `consolidated.safetensors`.

Weights are read lazily, tensor by tensor, and each tensor is converted to the target dtype as it
is read, so peak memory is the model in its final dtype plus one tensor. Every problem (missing
file, missing or unexpected key, wrong shape, corrupt file, not enough memory) raises
`CheckpointError` before any model is returned.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from evalkit.errors import EvalkitError

CONFIG_FILES = {"hf": "config.json", "native": "params.json"}
SINGLE_FILE = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"
NATIVE_FILE = "consolidated.safetensors"


class CheckpointError(EvalkitError, ValueError):
    """A checkpoint cannot be used; the message names the file and the problem."""


def _decode_special_floats(obj: dict) -> object:
    # transformers 5.x writes non-finite floats as {"__float__": "Infinity"}.
    if set(obj) == {"__float__"}:
        return float(obj["__float__"])
    return obj


def read_json(file: Path) -> dict:
    """Parse a JSON file, accepting bare `Infinity`/`NaN` literals and `{"__float__": ...}` objects."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as e:
        raise CheckpointError(f"{file}: cannot read: {e}") from e
    try:
        data = json.loads(text, object_hook=_decode_special_floats)
    except (json.JSONDecodeError, ValueError) as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def read_config(path: str | os.PathLike) -> tuple[str, dict]:
    """Return ("hf", config.json) or ("native", params.json) for a checkpoint directory.

    config.json wins when both exist, since its weights are the ones `load_weights` reads first.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory does not exist")
    for fmt, name in CONFIG_FILES.items():
        if (path / name).is_file():
            return fmt, read_json(path / name)
    raise CheckpointError(
        f"{path}: neither config.json (Hugging Face format) nor params.json (native format) found"
    )


@contextmanager
def _open_safetensors(file: Path) -> Iterator:
    """safe_open with its header errors (truncated, garbage) turned into CheckpointError."""
    from safetensors import safe_open

    try:
        handle = safe_open(file, framework="pt", device="cpu")
    except Exception as e:  # safetensors' own error type varies across versions
        raise CheckpointError(f"{file}: corrupt or truncated safetensors file ({e})") from e
    with handle as f:
        yield f


def weight_files(path: str | os.PathLike) -> dict[str, Path]:
    """Map each tensor name to the safetensors file that holds it (without opening the shards)."""
    path = Path(path)
    index = path / SHARD_INDEX
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: no 'weight_map' listing the tensors and their shards")
        files = {name: path / shard for name, shard in weight_map.items()}
        for shard in sorted(set(files.values())):
            if not shard.is_file():
                raise CheckpointError(f"{shard}: shard listed in {index.name} is missing")
        return files
    for name in (SINGLE_FILE, NATIVE_FILE):
        file = path / name
        if file.is_file():
            with _open_safetensors(file) as f:
                return dict.fromkeys(f.keys(), file)
    raise CheckpointError(
        f"{path}: no weights found (expected {SINGLE_FILE}, {SHARD_INDEX} with shards, or {NATIVE_FILE})"
    )


_SAFETENSORS_DTYPES = {
    "F32": torch.float32,
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F64": torch.float64,
}


def stored_dtype(path: str | os.PathLike) -> torch.dtype:
    """The floating-point dtype holding most of the checkpoint's weights (read from headers only)."""
    counts: dict[torch.dtype, int] = {}
    files = weight_files(path)
    for file in sorted(set(files.values())):
        with _open_safetensors(file) as f:
            for name in f.keys():
                tensor = f.get_slice(name)
                dtype = _SAFETENSORS_DTYPES.get(tensor.get_dtype())
                if dtype is not None:
                    counts[dtype] = counts.get(dtype, 0) + math.prod(tensor.get_shape())
    if not counts:
        raise CheckpointError(f"{path}: no floating-point tensors in the checkpoint")
    return max(counts, key=lambda d: counts[d])


def available_memory_bytes() -> int | None:
    """Memory the OS can give us now (MemAvailable), or None when it cannot be told."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_device_memory_bytes(device: torch.device) -> int | None:
    """Free memory on `device`: the accelerator's for CUDA, the host's otherwise."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free
    return available_memory_bytes()


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def check_memory(n_bytes: int, dtype: torch.dtype, device: torch.device, path: Path) -> None:
    """Refuse a load that cannot fit, before reading anything."""
    available = available_device_memory_bytes(device)
    if available is None or n_bytes <= available:
        return
    hint = "; use --dtype bfloat16" if dtype == torch.float32 else ""
    raise CheckpointError(
        f"{path}: {_dtype_name(dtype)} weights need {n_bytes / 1e9:.1f} GB, "
        f"{available / 1e9:.1f} GB available on {device}{hint}"
    )


def load_weights(
    path: str | os.PathLike,
    expected: Mapping[str, tuple[int, ...]],
    rename: Callable[[str], str | None],
    dtype: torch.dtype,
    device: str | torch.device = "cpu",
    transform: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
    keep_dtype: Callable[[str], bool] | None = None,
) -> dict[str, torch.Tensor]:
    """Read, check and convert a checkpoint's tensors into a state dict for `expected`.

    expected:   our parameter name -> shape; every one must be found exactly once.
    rename:     checkpoint tensor name -> our parameter name, or None to skip that tensor
                (e.g. rotary caches); a tensor that maps to a name outside `expected` is an error.
    transform:  optional (our name, tensor) -> tensor applied after reading, before the shape check
                (e.g. permuting wq/wk rows); it sees the tensor in the checkpoint's dtype.
    keep_dtype: optional predicate on our name; those tensors are loaded in float32 whatever `dtype`
                says (e.g. SSM parameters that references keep in fp32).

    Example, loading Hugging Face names into a model whose names lack the "model." prefix::

        expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
        state = load_weights(path, expected, rename=lambda k: k.removeprefix("model."),
                             dtype=torch.bfloat16, device="cpu")
        model.load_state_dict(state, assign=True)
    """
    path = Path(path)
    device = torch.device(device)
    files = weight_files(path)

    # Map names and check completeness before reading a single tensor.
    sources: dict[str, tuple[str, Path]] = {}
    for ckpt_name, file in files.items():
        ours = rename(ckpt_name)
        if ours is None:
            continue
        if ours not in expected:
            raise CheckpointError(f"{file}: unexpected tensor {ckpt_name!r} (maps to unknown {ours!r})")
        if ours in sources:
            first = sources[ours][0]
            raise CheckpointError(f"{file}: tensor {ours!r} appears twice ({first!r}, {ckpt_name!r})")
        sources[ours] = (ckpt_name, file)
    missing = [name for name in expected if name not in sources]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        if len(missing) > 5:
            shown += f" and {len(missing) - 5} more"
        raise CheckpointError(f"{path}: missing tensor(s) {shown}")

    def target_dtype(name: str) -> torch.dtype:
        return torch.float32 if keep_dtype is not None and keep_dtype(name) else dtype

    n_bytes = sum(math.prod(shape) * target_dtype(name).itemsize for name, shape in expected.items())
    check_memory(n_bytes, dtype, device, path)

    state: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for ours, (_, file) in sources.items():
        by_file.setdefault(file, []).append(ours)
    for file, names in by_file.items():
        with _open_safetensors(file) as f:
            present = set(f.keys())
            for ours in names:
                ckpt_name = sources[ours][0]
                if ckpt_name not in present:
                    raise CheckpointError(f"{file}: tensor {ckpt_name!r} listed in the index is missing here")
                try:
                    tensor = f.get_tensor(ckpt_name)
                except Exception as e:  # safetensors' own error type varies across versions
                    raise CheckpointError(f"{file}: corrupt or truncated tensor {ckpt_name!r} ({e})") from e
                if transform is not None:
                    tensor = transform(ours, tensor)
                if tuple(tensor.shape) != tuple(expected[ours]):
                    raise CheckpointError(
                        f"{file}: tensor {ckpt_name!r} has shape {tuple(tensor.shape)}, "
                        f"expected {tuple(expected[ours])}"
                    )
                state[ours] = tensor.to(device=device, dtype=target_dtype(ours))
                del tensor
    return state


def config_hash(path: str | os.PathLike) -> str:
    """Short SHA-256 of the checkpoint's config file, to tell checkpoints apart in results."""
    import hashlib

    fmt, _ = read_config(path)
    data = (Path(path) / CONFIG_FILES[fmt]).read_bytes()
    return hashlib.sha256(data).hexdigest()[:16]
