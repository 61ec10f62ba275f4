"""Checkpoint reading: formats, sharding, and one clear CheckpointError per way a checkpoint can be broken."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from mamba2_checkpoints import SMALL_SIZES, oracle, save_hf, save_native
from safetensors.torch import load_file, save_file

import evalkit.models.checkpoint as checkpoint
from evalkit.models import CheckpointError, load_model
from evalkit.models.checkpoint import read_config
from evalkit.models.registry import resolve_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_hf():
    return oracle(seed=3, **SMALL_SIZES)


@pytest.fixture
def hf_dir(small_hf, tmp_path):
    return save_hf(small_hf, tmp_path / "ckpt")


def rewrite_weights(directory, edit):
    file = directory / "model.safetensors"
    tensors = load_file(file)
    edit(tensors)
    save_file(tensors, file)


def test_sharded_checkpoint_loads(small_hf, tmp_path):
    directory = save_hf(small_hf, tmp_path / "sharded", max_shard_size="60KB")
    assert len(list(directory.glob("model-*-of-*.safetensors"))) > 1
    assert (directory / "model.safetensors.index.json").is_file()
    ids = torch.randint(0, 256, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = load_model(directory, dtype=torch.float32)(ids) - small_hf(ids).logits
    assert diff.abs().max().item() < 1e-4


def test_missing_shard(small_hf, tmp_path):
    directory = save_hf(small_hf, tmp_path / "sharded", max_shard_size="60KB")
    victim = sorted(directory.glob("model-*-of-*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=rf"{victim.name}.*missing"):
        load_model(directory)


def test_missing_tensor(hf_dir):
    rewrite_weights(hf_dir, lambda t: t.pop("backbone.layers.1.mixer.D"))
    with pytest.raises(CheckpointError, match=r"missing tensor.*backbone\.layers\.1\.mixer\.D"):
        load_model(hf_dir)


def test_unexpected_tensor(hf_dir):
    rewrite_weights(hf_dir, lambda t: t.update({"backbone.layers.7.norm.weight": torch.ones(64)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'backbone\.layers\.7\.norm\.weight'"):
        load_model(hf_dir)


def test_shape_mismatch(hf_dir):
    rewrite_weights(hf_dir, lambda t: t.update({"backbone.norm_f.weight": torch.ones(63)}))
    expected = r"model\.safetensors.*'backbone\.norm_f\.weight' has shape \(63,\), expected \(64,\)"
    with pytest.raises(CheckpointError, match=expected):
        load_model(hf_dir)


def test_unknown_model_type(hf_dir):
    config = json.loads((hf_dir / "config.json").read_text())
    config["model_type"] = "rwkv"
    (hf_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json: unknown model_type 'rwkv'"):
        load_model(hf_dir)


def test_native_unknown_model_type(small_hf, tmp_path):
    directory = save_native(oracle(seed=4), tmp_path / "native")
    params = json.loads((directory / "params.json").read_text())
    params["model_type"] = "hyena"
    (directory / "params.json").write_text(json.dumps(params))
    with pytest.raises(CheckpointError, match=r"params\.json: unknown model_type 'hyena'"):
        load_model(directory)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_weights_file(hf_dir, damage):
    file = hf_dir / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x07" * 64)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt or truncated"):
        load_model(hf_dir)


def test_corrupt_config(hf_dir):
    (hf_dir / "config.json").write_text('{"model_type": "mamba2", ')
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_model(hf_dir)


def test_no_config_or_no_weights(hf_dir, tmp_path):
    with pytest.raises(CheckpointError, match="neither config.json"):
        load_model(tmp_path)
    (hf_dir / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights found"):
        load_model(hf_dir)


def test_fp32_that_cannot_fit_is_refused_up_front(hf_dir, monkeypatch):
    _, config = read_config(hf_dir)
    fp32_bytes = sum(4 * t.numel() for t in load_file(hf_dir / "model.safetensors").values())
    # Room for bf16 (plus the small fp32 SSM parameters) but not for fp32.
    monkeypatch.setattr(checkpoint, "available_memory_bytes", lambda: int(fp32_bytes * 0.7))
    expected = r"fp32 weights need [\d.]+ GB, [\d.]+ GB available on cpu; use --dtype bfloat16"
    with pytest.raises(CheckpointError, match=expected):
        load_model(hf_dir, dtype=torch.float32, device="cpu")
    model = load_model(hf_dir, dtype=torch.bfloat16, device="cpu")
    assert model.lm_head.weight.dtype == torch.bfloat16


def test_config_infinity_literal_and_transformers_encoding(hf_dir):
    text = (hf_dir / "config.json").read_text()
    config = json.loads(text)
    assert config["time_step_limit"][1] == {"__float__": "Infinity"}  # how transformers 5 writes it
    assert read_config(hf_dir)[1]["time_step_limit"] == [0.0, math.inf]
    config["time_step_limit"] = [0.0, "INF"]
    (hf_dir / "config.json").write_text(json.dumps(config).replace('"INF"', "Infinity"))  # real Codestral
    assert read_config(hf_dir)[1]["time_step_limit"] == [0.0, math.inf]
    assert load_model(hf_dir).config.dt_max == math.inf


def test_default_dtype_is_the_stored_one(small_hf, tmp_path):
    directory = save_hf(copy.deepcopy(small_hf).to(torch.bfloat16), tmp_path / "bf16")
    model = load_model(directory)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model.backbone.layers[0].mixer.A_log.dtype == torch.float32


def test_resolve_local_directory_and_unknown_name(hf_dir, tmp_path):
    assert resolve_checkpoint(str(hf_dir)) == hf_dir
    with pytest.raises(CheckpointError, match="not a known model.*codestral-mamba"):
        resolve_checkpoint(str(tmp_path / "nowhere"))


def test_registry_name_offline_without_cache_says_where_to_put_files(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint("codestral-mamba")
    message = str(info.value)
    assert "mistralai/Mamba-Codestral-7B-v0.1" in message
    assert "download mistralai/Mamba-Codestral-7B-v0.1 --local-dir" in message
    assert "--model " in message


def test_registry_name_uses_the_local_cache_first(hf_dir, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs.get("local_files_only")))
        return str(hf_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_checkpoint("mathstral") == hf_dir
    assert calls == [("mistralai/Mathstral-7B-v0.1", True)]
