"""`evalkit report`: the leaderboard built from replayed runs must show the numbers their flips imply."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from replayed_runs import HUMANEVAL_SIZE, replayed_run, task_ids
from typer.testing import CliRunner

from evalkit.cli import app
from evalkit.plots import PNG_SIGNATURE
from evalkit.report import FLAG, leaderboard
from evalkit.store import load_run

pytestmark = [pytest.mark.docker, pytest.mark.slow]
TEN_PERCENT = round(0.10 * HUMANEVAL_SIZE)


def expected_cell(wrong: int, problems: int = HUMANEVAL_SIZE) -> str:
    """The leaderboard cell for a run with `wrong` failed problems, from first principles."""
    outcomes = np.array([0.0] * wrong + [1.0] * (problems - wrong))
    stderr = outcomes.std(ddof=1) / np.sqrt(problems)
    return f"{100 * outcomes.mean():.2f} ± {100 * stderr:.2f}"


@pytest.fixture(scope="module")
def runs(sandbox) -> dict[str, Path]:
    return {
        "base": replayed_run("base"),
        "flip-1": replayed_run("flip-1", wrong=task_ids(1)),
        "flip-10pct": replayed_run("flip-10pct", wrong=task_ids(TEN_PERCENT, step=10)),
    }


def report(*args: str) -> str:
    result = CliRunner().invoke(app, ["report", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_leaderboard_numbers_match_the_replayed_flips(runs):
    lb = leaderboard([load_run(p) for p in runs.values()])
    column = ("humaneval", "pass@1")
    assert lb.values.loc["replay:flip-10pct.jsonl", column] == pytest.approx(1 - TEN_PERCENT / HUMANEVAL_SIZE)
    assert lb.values.loc["replay:flip-1.jsonl", column] == pytest.approx(1 - 1 / HUMANEVAL_SIZE)
    assert lb.values.loc["replay:base.jsonl", column] == 1.0
    p = 1 - TEN_PERCENT / HUMANEVAL_SIZE
    closed_form = np.sqrt(p * (1 - p) / (HUMANEVAL_SIZE - 1))  # sample std of 0/1 outcomes / sqrt(n)
    assert lb.stderr.loc["replay:flip-10pct.jsonl", column] == pytest.approx(closed_form)
    # ranked best first
    assert list(lb.values.index) == ["replay:base.jsonl", "replay:flip-1.jsonl", "replay:flip-10pct.jsonl"]
    # Only provenance (e.g. a commit landing between two runs) may differ: nothing that moves scores.
    assert lb.flagged_tasks == [] and set(lb.settings["moves scores"]) <= {"no"}


def test_markdown_report(runs, tmp_path):
    out = tmp_path / "board.md"
    report(*runs.values(), "--output-path", out)
    text = out.read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (replay:[^|]+) \| ([^|]+) \|$", text, re.M)}
    assert rows == {
        "replay:base.jsonl": expected_cell(0),
        "replay:flip-1.jsonl": expected_cell(1),
        "replay:flip-10pct.jsonl": expected_cell(TEN_PERCENT),
    }
    assert "| humaneval pass@1 |" in text  # no flag: the runs are comparable
    image = tmp_path / "board_files" / "scores_by_task.png"
    assert f"]({image.parent.name}/{image.name})" in text
    assert image.read_bytes().startswith(PNG_SIGNATURE) and image.stat().st_size > 5000


def test_differing_settings_are_flagged(runs, tmp_path):
    limited = replayed_run("base-40", limit=40)
    out = tmp_path / "board.md"
    report(runs["base"], runs["flip-1"], limited, "--output-path", out)
    text = out.read_text()
    assert f"| humaneval pass@1 {FLAG} |" in text
    table = markdown_table(text.split("## Settings that differ between runs")[1])
    assert table["limit"] == {"replay:base.jsonl": "null", "replay:flip-1.jsonl": "null",
                              "replay:base-40.jsonl": "40", "moves scores": "yes"}
    assert table["tasks.humaneval.n_docs"] == {"replay:base.jsonl": "164", "replay:flip-1.jsonl": "164",
                                               "replay:base-40.jsonl": "40", "moves scores": "yes"}


def markdown_table(text: str) -> dict[str, dict[str, str]]:
    """The first Markdown table in `text`: first column -> {header: cell}."""
    lines = [line for line in text.strip().splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return {r[0]: dict(zip(header[1:], r[1:], strict=True)) for r in rows}


def test_html_report_embeds_the_plot(runs, tmp_path):
    out = tmp_path / "board.html"
    report(*runs.values(), "--output-path", out)
    page = out.read_text()
    assert expected_cell(TEN_PERCENT) in page and "<table>" in page
    [data] = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert base64.b64decode(data).startswith(PNG_SIGNATURE)


def test_report_rejects_an_unknown_format_and_a_missing_run(runs, tmp_path):
    result = CliRunner().invoke(app, ["report", str(runs["base"]), "--output-path", str(tmp_path / "board.pdf")])
    assert result.exit_code == 2 and ".md or .html" in result.output
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nope"), "--output-path", str(tmp_path / "b.md")])
    assert result.exit_code == 2 and "not a run folder" in result.output


def test_html_report_renders_in_headless_chromium(runs, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    out = tmp_path / "board.html"
    report(*runs.values(), "--output-path", out)
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}", "--window-size=1200,1000",
                    f"--screenshot={shot}", out.as_uri()], check=True, capture_output=True, timeout=120)
    import matplotlib.image

    pixels = (matplotlib.image.imread(shot)[..., :3] * 255).round().astype(int)
    assert pixels.shape[:2] == (1000, 1200)
    # The bar chart drew: matplotlib's first colour (tab:blue, 31/119/180) fills the first run's bar.
    blue = (np.abs(pixels - [31, 119, 180]).sum(axis=-1) < 12).sum()
    assert blue > 2000, f"only {blue} bar-coloured pixels: the embedded plot did not render"
