"""Spider: the schema prompt, execution accuracy on the host (read-only, timed), and missing databases
reported as skipped instead of wrong."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace

import pytest

from evalkit.data import DataConfig, sha256_file
from evalkit.requests import SamplingParams
from evalkit.sqlite_readonly import QueryError, run_query
from evalkit.tasks import TaskError, get_task
from tasks.spider import create_table_schema, results_match


@pytest.fixture(scope="module")
def task(data_dir):
    return get_task("spider", DataConfig(mirror=data_dir))


@pytest.fixture(scope="module")
def docs(task):
    return task.docs()


def test_docs_ids_and_prompt(task, docs):
    assert len(docs) == 1034
    assert [d["task_id"] for d in docs[:2]] == ["spider/0", "spider/1"]
    req = task.request(docs[0])
    assert "CREATE TABLE stadium (\n  Stadium_ID number,\n" in req.prompt
    assert "FOREIGN KEY (Stadium_ID) REFERENCES stadium(Stadium_ID)" in req.prompt
    assert req.prompt.endswith(f"-- {docs[0]['question']}\nSELECT")
    assert req.reference == " count(*) FROM singer"  # the gold query, continuing the prompt's SELECT


def test_reference_drops_lowercase_select_and_trailing_semicolon(task, docs):
    doc = next(d for d in docs if d["query"].startswith("select") and d["query"].rstrip().endswith(";"))
    ref = task.request(doc).reference
    assert not ref.lower().lstrip().startswith("select") and not ref.endswith(";")


def test_schema_lists_every_table_and_column(docs):
    schema = docs[0]["schema"]
    text = create_table_schema(schema)
    assert text.count("CREATE TABLE") == len(schema["table_names_original"])
    for _, column in schema["column_names_original"][1:]:
        assert column in text


@pytest.mark.parametrize(("gold", "pred", "order", "expected"), [
    ([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], False, True),  # row order ignored without ORDER BY
    ([(1, "a"), (2, "b")], [(2, "b"), (1, "a")], True, False),  # ... and respected with it
    ([(1, "a"), (2, "b")], [("a", 1), ("b", 2)], True, True),  # column order ignored
    ([(1,), (1,), (2,)], [(1,), (2,), (2,)], False, False),  # multisets, not sets
    ([(1,), (2,)], [(1,), (2,), (2,)], False, False),
    ([(1, 2)], [(1,)], False, False),
    ([], [], False, True),
    ([], [(1,)], False, False),
    ([(3,)], [(3.0,)], False, True),  # SQL values compare by value
])
def test_results_match(gold, pred, order, expected):
    assert results_match(gold, pred, order) is expected


@pytest.fixture(scope="module")
def self_check(task, docs):
    return [task.score(d, task.request(d).reference, None) for d in docs]


def test_gold_queries_score_full_marks_and_wta_1_is_skipped(task, docs, self_check):
    verdicts = {(d["db_id"] == "wta_1", s.verdict) for d, s in zip(docs, self_check, strict=True)}
    assert verdicts == {(False, "passed"), (True, "skipped")}
    records = [{"task_id": d["task_id"], "verdict": s.verdict} for d, s in zip(docs, self_check, strict=True)]
    summary = task.aggregate(records, SamplingParams())
    assert summary["metrics"] == {"execution_accuracy": 1.0}
    assert summary["skipped_db_missing"] == 62 and summary["scored_questions"] == 972


def test_a_completion_may_restate_select(task, docs):
    assert task.score(docs[0], "SELECT count(*) FROM singer;", None).passed
    assert task.score(docs[0], " count(*) FROM singer;\n\n-- next question", None).passed


def test_wrong_erroring_and_slow_queries_are_wrong(task, docs, monkeypatch):
    doc = docs[0]  # SELECT count(*) FROM singer
    assert task.score(doc, " count(*) FROM stadium", None).verdict == "failed"
    assert task.score(doc, " count(*) FROM no_such_table", None).verdict == "failed"
    assert task.score(doc, " count(*) FRM singer", None).verdict == "failed"
    monkeypatch.setattr("tasks.spider.TIMEOUT", 0.5)
    endless = " count(*) FROM (WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT i FROM r)"
    slow = task.score(doc, endless, None)
    assert slow.verdict == "timeout" and "timed out" in slow.error


@pytest.mark.parametrize("attack", [
    "DELETE FROM singer", "DROP TABLE singer", "UPDATE singer SET Name = 'x'",
    "ATTACH DATABASE 'evil.db' AS evil", "PRAGMA writable_schema = 1",
    "SELECT load_extension('/tmp/evil.so')", "CREATE TEMP TABLE t(x)",
    "SELECT 1; DELETE FROM singer",
])
def test_writes_and_escapes_are_refused(docs, attack, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where ATTACH would create its file
    path = docs[0]["db_path"]
    before = sha256_file(path)
    with pytest.raises(QueryError):
        run_query(path, attack, 5.0)
    assert sha256_file(path) == before and not (tmp_path / "evil.db").exists()


def test_row_cap_stops_reading(docs):
    assert len(run_query(docs[0]["db_path"], "SELECT * FROM singer_in_concert", 5.0, max_rows=3)) == 3


def official_layout(tmp_path, data_dir, with_wta_1: bool):
    """A folder laid out like the official download: tables.json beside database/<db_id>/<db_id>.sqlite."""
    root = tmp_path / "spider"
    (root / "database").mkdir(parents=True)
    (root / "tables.json").symlink_to(data_dir / "spider" / "tables.json")
    for db in (data_dir / "spider" / "database").iterdir():
        (root / "database" / db.name).symlink_to(db)
    if with_wta_1:  # wta_1's real content is unavailable here: its schema, empty, stands in for it
        schema = next(s for s in json.loads((data_dir / "spider" / "tables.json").read_text()) if s["db_id"] == "wta_1")
        (root / "database" / "wta_1").mkdir()
        with sqlite3.connect(root / "database" / "wta_1" / "wta_1.sqlite") as conn:
            conn.executescript(create_table_schema(schema).replace(" number", " numeric").replace(" others", ""))
    return root


def test_official_download_scores_every_question(tmp_path, data_dir):
    root = official_layout(tmp_path, data_dir, with_wta_1=True)
    task = get_task("spider", replace(DataConfig(mirror=data_dir), spider_db_dir=root))
    wta = [d for d in task.docs() if d["db_id"] == "wta_1"]
    assert len(wta) == 62
    assert {task.score(d, task.request(d).reference, None).verdict for d in wta} == {"passed"}
    assert task.provenance["databases"]["wta_1"] != "missing"


def test_missing_database_folder_says_where_to_get_it(tmp_path, data_dir):
    task = get_task("spider", replace(DataConfig(mirror=data_dir), spider_db_dir=tmp_path / "nowhere"))
    with pytest.raises(TaskError, match="yale-lily.github.io/spider.*--spider-db-dir"):
        task.docs()


def test_loads_questions_from_the_hub_and_schemas_beside_the_databases(monkeypatch, tmp_path, data_dir):
    dev = json.loads((data_dir / "spider" / "dev.json").read_text())
    calls = []

    def fake_hub_rows(repo, split, config=None, revision=None):
        calls.append((repo, split, config))
        return dev[:3], {"source": "hub"}

    monkeypatch.setattr("evalkit.data.hub_rows", fake_hub_rows)
    root = official_layout(tmp_path, data_dir, with_wta_1=False)
    task = get_task("spider", DataConfig(spider_db_dir=root))
    docs = task.docs()
    assert [d["task_id"] for d in docs] == ["spider/0", "spider/1", "spider/2"]
    assert calls == [("xlangai/spider", "validation", None)]
    assert task.score(docs[0], task.request(docs[0]).reference, None).passed
