"""The leaderboard: runs as rows, task metrics as columns, with standard errors, as Markdown or HTML.

Settings that differ between the runs are listed, and task columns whose score-moving settings differ
(dataset, prompt, sampling, limits) are flagged, because their numbers do not measure the same thing.
The HTML page is self-contained: its plots are embedded PNGs (bars per task; bench curves with --bench).
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from evalkit.experiment import differing_settings, moves_scores
from evalkit.plots import bench_chart, task_bars
from evalkit.store import Run, load_run

FLAG = "†"  # marks a task column whose runs differ in a score-moving setting


@dataclass
class Leaderboard:
    values: pd.DataFrame  # rows: run labels; columns: (task, metric); fractions, NaN where not evaluated
    stderr: pd.DataFrame  # same shape
    runs: pd.DataFrame  # one row per run label: run id, model, sampling, commit
    tasks: pd.DataFrame  # one row per task: problems and samples per problem in each run, stderr method
    settings: pd.DataFrame  # rows: differing setting keys; columns: run labels; plus "moves scores"
    flagged_tasks: list[str]


def _unique_labels(runs: Sequence[Run]) -> list[str]:
    labels = [r.label for r in runs]
    return [f"{lab} ({r.run_id})" if labels.count(lab) > 1 else lab for lab, r in zip(labels, runs, strict=True)]


def leaderboard(runs: Sequence[Run]) -> Leaderboard:
    """Build the tables. Rows are ranked by the mean of each task's first (headline) metric."""
    labels = _unique_labels(runs)
    values, errors, task_rows = {}, {}, {}
    for label, run in zip(labels, runs, strict=True):
        for task, info in run.results["tasks"].items():
            for metric, value in info.get("metrics", {}).items():
                values.setdefault((task, metric), {})[label] = value
                errors.setdefault((task, metric), {})[label] = info.get("stderr", {}).get(metric, math.nan)
            row = task_rows.setdefault(task, {"stderr method": "; ".join(sorted(set(
                info.get("stderr_method", {}).values())))})
            row[label] = f"{info.get('n', '?')} x {info.get('samples_per_problem', 1)}"
    columns = pd.MultiIndex.from_tuples(list(values), names=["task", "metric"])
    value_frame = pd.DataFrame(values, index=labels, columns=columns).astype(float)
    stderr_frame = pd.DataFrame(errors, index=labels, columns=columns).astype(float)
    headline = [next(c for c in columns if c[0] == task) for task in dict.fromkeys(t for t, _ in columns)]
    order = value_frame[headline].mean(axis=1, skipna=True).sort_values(ascending=False, kind="stable").index
    value_frame, stderr_frame = value_frame.loc[order], stderr_frame.loc[order]

    run_frame = pd.DataFrame([{
        "run": label,
        "run id": run.run_id,
        "model": run.model,
        "sampling": ", ".join(f"{k}={v}" for k, v in run.config.get("sampling", {}).items()),
        "commit": (run.config.get("git", {}).get("commit") or "")[:10],
    } for label, run in zip(labels, runs, strict=True)]).set_index("run").loc[order]

    task_frame = pd.DataFrame.from_dict(task_rows, orient="index")
    task_frame = task_frame[[c for c in [*order, "stderr method"] if c in task_frame.columns]].fillna("-")
    task_frame.index.name = "task (problems x samples)"

    diff = differing_settings([r.config for r in runs])
    settings = pd.DataFrame({lab: [_cell(v[i]) for v in diff.values()] for i, lab in enumerate(labels)},
                            index=pd.Index(list(diff), name="setting"))
    if len(settings.columns):
        settings = settings[list(order)]
    settings["moves scores"] = ["yes" if moves_scores(k) else "no" for k in diff]
    flagged = sorted({k.split(".")[1] for k in diff if k.startswith("tasks.") and moves_scores(k)})
    if any(k.startswith(("sampling.", "limit")) for k in diff):
        flagged = list(dict.fromkeys(t for t, _ in columns))  # run-wide settings touch every task
    return Leaderboard(value_frame, stderr_frame, run_frame, task_frame, settings, flagged)


def _cell(value: object, width: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 3] + "..."


def score_table(lb: Leaderboard) -> pd.DataFrame:
    """The leaderboard as strings: "value ± stderr" in percent, "-" where a run lacks the task."""
    cells = {}
    for task, metric in lb.values.columns:
        header = f"{task} {metric}" + (f" {FLAG}" if task in lb.flagged_tasks else "")
        cells[header] = [
            "-" if math.isnan(v) else f"{100 * v:.2f}" + ("" if math.isnan(s) else f" ± {100 * s:.2f}")
            for v, s in zip(lb.values[(task, metric)], lb.stderr[(task, metric)], strict=True)
        ]
    table = pd.DataFrame(cells, index=lb.values.index)
    table.index.name = "model"
    return table


# ------------------------------------------------------------------------------------------ markdown


def _markdown_table(frame: pd.DataFrame) -> str:
    """GitHub-flavoured Markdown for a frame of strings (the index becomes the first column)."""
    def esc(x: object) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    header = [frame.index.name or "", *map(str, frame.columns)]
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for idx, row in frame.iterrows():
        lines.append("| " + " | ".join(esc(c) for c in [idx, *row.tolist()]) + " |")
    return "\n".join(lines)


def _notes(lb: Leaderboard) -> list[str]:
    notes = ["Scores in percent ± one standard error; the Tasks table names how each standard error was computed. "
             "Rows are ranked by the mean of each task's first metric."]
    if lb.flagged_tasks:
        notes.append(f"{FLAG} The runs differ in a setting that moves this task's scores (see Settings that differ): "
                     "its numbers are not directly comparable.")
    return notes


def render_markdown(lb: Leaderboard, images: dict[str, str], bench: dict | None = None) -> str:
    """The report as Markdown; `images` maps captions to image paths relative to the report."""
    parts = ["# evalkit leaderboard", "", _markdown_table(score_table(lb)), "", *_notes(lb), ""]
    for caption, path in images.items():
        parts += [f"![{caption}]({path})", ""]
    parts += ["## Runs", "", _markdown_table(lb.runs), "", "## Tasks", "", _markdown_table(lb.tasks), ""]
    parts += ["## Settings that differ between runs", ""]
    parts += [_markdown_table(lb.settings) if len(lb.settings) else "None: every recorded setting is the same.", ""]
    if bench is not None:
        parts += ["## Throughput against context length", "", bench_summary(bench), "",
                  _markdown_table(bench_table(bench)), ""]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ html

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 14px; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; vertical-align: top; }
td { overflow-wrap: anywhere; }  /* long commits and paths wrap instead of widening the page */
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.moves td { background: #fff4e0; }
.note { color: #555; font-size: 13px; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
"""


def _html_table(frame: pd.DataFrame, numeric: bool = False, highlight: list[bool] | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [frame.index.name or "", *frame.columns])
    body = []
    for i, (idx, row) in enumerate(frame.iterrows()):
        cls = ' class="num"' if numeric else ""
        cells = "".join(f"<td{cls}>{html.escape(str(c))}</td>" for c in row.tolist())
        tr = ' class="moves"' if highlight and highlight[i] else ""
        body.append(f"<tr{tr}><th>{html.escape(str(idx))}</th>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}"></figure>'


def render_html(lb: Leaderboard, pngs: dict[str, bytes], bench: dict | None = None) -> str:
    """A self-contained page: tables, and the plots embedded as data URIs."""
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>evalkit leaderboard</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>evalkit leaderboard</h1>", _html_table(score_table(lb), numeric=True)]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in _notes(lb)]
    bench_pngs = {k: v for k, v in pngs.items() if k.startswith("bench")}
    parts += [_img(png, caption) for caption, png in pngs.items() if not caption.startswith("bench")]
    parts += ["<h2>Runs</h2>", _html_table(lb.runs), "<h2>Tasks</h2>", _html_table(lb.tasks),
              "<h2>Settings that differ between runs</h2>"]
    if len(lb.settings):
        parts.append(_html_table(lb.settings, highlight=[v == "yes" for v in lb.settings["moves scores"]]))
    else:
        parts.append("<p>None: every recorded setting is the same.</p>")
    if bench is not None:
        parts += ["<h2>Throughput against context length</h2>",
                  f'<p class="note">{html.escape(bench_summary(bench))}</p>']
        parts += [_img(png, caption) for caption, png in bench_pngs.items()]
        parts.append(_html_table(bench_table(bench), numeric=True))
    parts.append("</body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ bench results


def load_bench(path: str | Path) -> dict:
    """A bench result: the folder `evalkit bench` wrote (its bench.json) or the JSON file itself."""
    path = Path(path)
    file = path / "bench.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist; pass the folder `evalkit bench` wrote")
    data = json.loads(file.read_text(encoding="utf-8"))
    if "rows" not in data or "meta" not in data:
        raise ValueError(f"{file} is not an evalkit bench result (no meta/rows)")
    return data


def bench_summary(bench: dict) -> str:
    meta = bench["meta"]
    return (f"{meta.get('subtitle', '')}. Median of {meta.get('repeats', '?')} timed repeats after "
            f"{meta.get('warmup', '?')} warm-up; min-max spread in brackets.")


def bench_table(bench: dict) -> pd.DataFrame:
    rows = []
    for r in bench["rows"]:
        ok = r["status"] == "ok"
        rows.append({
            "arch": r["arch"],
            "context": r["context"],
            "prefill tok/s": f"{r['prefill_tok_s']:.0f} [{r['prefill_tok_s_min']:.0f}-{r['prefill_tok_s_max']:.0f}]"
            if ok else "-",
            "decode ms/tok": f"{r['decode_ms_per_tok']:.2f} [{r['decode_ms_per_tok_min']:.2f}-"
                             f"{r['decode_ms_per_tok_max']:.2f}]" if ok else "-",
            "peak MiB": f"{r['peak_mem_mib']:.0f}" if ok else "-",
            "status": r["status"],
        })
    return pd.DataFrame(rows).set_index("arch")


def bench_pngs(bench: dict) -> dict[str, bytes]:
    subtitle = bench["meta"].get("subtitle", "")
    return {f"bench {panel}": bench_chart(bench["rows"], panel, subtitle) for panel in ("prefill", "decode", "memory")}


# ------------------------------------------------------------------------------------------ entry point


def write_report(run_dirs: Sequence[str | Path], out: str | Path, bench_dir: str | Path | None = None) -> Path:
    """Write the leaderboard to `out` (.md: plots as PNG files beside it; .html: plots embedded)."""
    out = Path(out)
    if out.suffix not in (".md", ".html"):
        raise ValueError(f"--out must end in .md or .html, got {out.name}")
    runs = [load_run(p) for p in run_dirs]
    if not runs:
        raise ValueError("give at least one run folder")
    lb = leaderboard(runs)
    bench = load_bench(bench_dir) if bench_dir is not None else None
    pngs = {"scores by task": task_bars(lb.values, lb.stderr, "Scores by task (± 1 stderr)")}
    if bench is not None:
        pngs.update(bench_pngs(bench))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".html":
        out.write_text(render_html(lb, pngs, bench), encoding="utf-8")
    else:
        figures = out.parent / f"{out.stem}_files"
        figures.mkdir(exist_ok=True)
        images = {}
        for caption, png in pngs.items():
            name = caption.replace(" ", "_") + ".png"
            (figures / name).write_bytes(png)
            images[caption] = f"{figures.name}/{name}"
        out.write_text(render_markdown(lb, images, bench), encoding="utf-8")
    return out
