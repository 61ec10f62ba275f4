"""`evalkit bench` with the tiny preset: its files, its plots, and curves that stop where memory runs out.

Nothing here checks a timing; only that the measurements exist, are finite and positive, and are drawn.
"""

from __future__ import annotations

import csv
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from evalkit.bench import ARCHS, PRESETS, BenchError, load_config, predict_peak
from evalkit.cli import app
from evalkit.plots import PNG_SIGNATURE
from evalkit.report import write_report

REPO = Path(__file__).resolve().parents[1]
TINY = PRESETS["tiny"]
# matplotlib's first three line colours, in architecture order
LINE_COLOURS = {"mamba2": (31, 119, 180), "swa": (255, 127, 14), "full": (44, 160, 44)}


def bench(*args: str) -> str:
    result = CliRunner().invoke(app, ["bench", "--no-progress", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def colour_pixels(path: Path, rgb: tuple[int, int, int]) -> int:
    import matplotlib.image

    pixels = (matplotlib.image.imread(path)[..., :3] * 255).round().astype(int)
    return int((np.abs(pixels - rgb).sum(axis=-1) < 20).sum())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "tiny"
    text = bench("--preset", "tiny", "--threads", "1", "--output-path", out)
    assert f"wrote {out / 'bench.json'}" in text
    return out


def test_tiny_bench_writes_one_row_per_arch_and_context(tiny_run):
    with open(tiny_run / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["arch"], int(r["context"])) for r in rows] == [(a, c) for a in ARCHS for c in TINY.contexts]
    for r in rows:
        assert r["status"] == "ok", r
        for key in ("prefill_tok_s", "prefill_tok_s_min", "prefill_tok_s_max", "decode_ms_per_tok", "peak_mem_mib"):
            assert math.isfinite(float(r[key])) and float(r[key]) > 0, (key, r)
        assert float(r["prefill_tok_s_min"]) <= float(r["prefill_tok_s"]) <= float(r["prefill_tok_s_max"])
    data = json.loads((tiny_run / "bench.json").read_text())
    assert len(data["rows"]) == len(rows)
    meta = data["meta"]
    assert meta["device"] == "cpu" and meta["threads"] == 1 and meta["dtype"] == "float32"
    assert meta["repeats"] == TINY.repeats and meta["warmup"] == TINY.warmup
    assert set(meta["shapes"]) == set(ARCHS) and "W64" in meta["shapes"]["swa"]


def test_caches_follow_the_architectures(tiny_run):
    """Full attention keeps every position, the SWA buffer stops at its window, Mamba's state is flat."""
    rows = json.loads((tiny_run / "bench.json").read_text())["rows"]
    cache = {(r["arch"], r["context"]): r["cache_mib"] * 2**20 for r in rows}
    t = TINY.transformer
    per_token = 2 * t["n_layers"] * t["n_kv_heads"] * t["head_dim"] * 4  # keys and values, float32
    window = t["sliding_window"]
    for context in TINY.contexts:
        assert cache[("full", context)] >= (context + TINY.decode_tokens) * per_token
        assert cache[("swa", context)] <= window * per_token
        if context >= window:
            assert cache[("swa", context)] == window * per_token
        assert cache[("mamba2", context)] == cache[("mamba2", TINY.contexts[0])]
    assert cache[("full", TINY.contexts[-1])] > cache[("full", TINY.contexts[0])]


def test_plots_are_pngs_with_a_curve_per_architecture(tiny_run):
    rows = json.loads((tiny_run / "bench.json").read_text())["rows"]
    for panel in ("prefill", "decode", "memory"):
        path = tiny_run / f"{panel}.png"
        width, height = png_size(path)
        assert width >= 600 and height >= 350 and path.stat().st_size > 20_000
        for arch, rgb in LINE_COLOURS.items():
            if panel == "memory" and hidden_under_later_curves(rows, arch):
                continue
            assert colour_pixels(path, rgb) > 150, f"no {arch} curve in {panel}.png"


def hidden_under_later_curves(rows: list[dict], arch: str) -> bool:
    """The tiny models' peak memory is the process's, within a few MiB for every architecture: a curve drawn
    earlier can then lie under the later ones (when other tests grew the process, all of it can)."""
    later = ARCHS[ARCHS.index(arch) + 1 :]
    peak = {(r["arch"], r["context"]): r["peak_mem_mib"] for r in rows}
    return bool(later) and all(
        any(abs(peak[(arch, c)] - peak[(other, c)]) < 0.02 * peak[(arch, c)] for other in later) for c in TINY.contexts
    )


def test_a_curve_stops_cleanly_where_the_context_cannot_fit(tmp_path):
    # 2**45 tokens would need terabytes: predicted from the measured sizes, never attempted.
    huge = (32, 64, 2**45, 2**46)
    out = tmp_path / "huge"
    text = bench("--preset", "tiny", "--archs", "swa", "--contexts", ",".join(map(str, huge)), "--output-path", out)
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert [(r["context"], r["status"]) for r in rows] == [(32, "ok"), (64, "ok"), (2**45, "would not fit"),
                                                           (2**46, "would not fit")]
    assert "predicted peak" in rows[2]["note"] and "would not fit" in text
    assert png_size(out / "prefill.png")[0] >= 600


def test_a_memory_budget_below_the_weights_stops_every_curve(tmp_path):
    out = tmp_path / "budget"
    bench("--preset", "tiny", "--max-memory", "0.001", "--output-path", out)
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert len(rows) == len(ARCHS) * len(TINY.contexts)
    assert {r["status"] for r in rows} == {"would not fit"}
    assert all("weights alone" in r["note"] for r in rows)


def test_predicted_peak_follows_linear_and_quadratic_growth():
    base = 1000
    linear = [(c, base + 3 * c) for c in (512, 1024)]
    assert predict_peak(linear, base, 4096) == base + 3 * 4096
    quadratic = [(c, base + c * c) for c in (512, 1024)]
    assert predict_peak(quadratic, base, 4096) == base + 4096 * 4096
    cubic = [(c, base + c**3) for c in (512, 1024)]
    assert predict_peak(cubic, base, 2048) == base + 1024**3 * 4  # capped at quadratic
    assert predict_peak([], base, 4096) is None


def test_config_file_starts_from_a_preset(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"preset": "tiny", "contexts": [16, 48], "transformer": {"sliding_window": 8}}))
    cfg = load_config(config_file=path)
    assert cfg.contexts == (16, 48) and cfg.transformer["sliding_window"] == 8
    assert cfg.transformer["dim"] == TINY.transformer["dim"] and cfg.mamba2 == TINY.mamba2
    path.write_text(json.dumps({"preset": "tiny", "contxts": [16]}))
    with pytest.raises(BenchError, match="contxts"):
        load_config(config_file=path)
    with pytest.raises(BenchError, match="unknown preset"):
        load_config("huge")


def test_presets_build_the_real_7b_shapes():
    """The 7b preset describes Codestral Mamba 7B and Mistral 7B (counted on the meta device)."""
    from evalkit.bench import parameter_bytes

    cfg = PRESETS["7b"]
    billions = {arch: parameter_bytes(arch, cfg) / 2 / 1e9 for arch in ARCHS}  # bfloat16: 2 bytes a weight
    assert billions["mamba2"] == pytest.approx(7.29, abs=0.01)
    assert billions["swa"] == billions["full"] == pytest.approx(7.24, abs=0.01)


def test_report_embeds_the_bench_curves(tiny_run, tmp_path):
    baseline = REPO / "results" / "baselines" / "humaneval-reference"
    page = write_report([baseline], tmp_path / "r.html", bench_dir=tiny_run).read_text()
    assert page.count("data:image/png;base64,") == 4  # scores, prefill, decode, memory
    assert "Throughput against context length" in page and "W64" in page
    md = write_report([baseline], tmp_path / "r.md", bench_dir=tiny_run).read_text()
    for panel in ("prefill", "decode", "memory"):
        assert f"r_files/bench_{panel}.png" in md and (tmp_path / "r_files" / f"bench_{panel}.png").is_file()
    assert md.count("| mamba2 |") == len(TINY.contexts)
