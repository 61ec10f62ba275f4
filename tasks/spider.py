"""Spider dev (1034 questions): schema-in-prompt text-to-SQL, scored by execution accuracy.

The prompt gives the database's tables as CREATE TABLE statements (from tables.json), the question as
a SQL comment, and ends with `SELECT`, which the completion continues. Scoring is test-suite-sql-eval's
execution match (exec_eval.eval_exec_match, the official leaderboard's default): both queries get
`> =` written `>=` (also `< =`, `! =`), DISTINCT removed (`--task-option keep_distinct=true` keeps it,
as the evaluator's --keep_distinct) and YEAR(CURDATE()) read as 2020; they run against
`database/<db_id>/<db_id>.sqlite`; results match as multisets of rows (as lists when the gold query
contains "order by"), with the columns in any order. A prediction that errors or runs out of time is
wrong. A question whose database is missing is reported as skipped (verdict "skipped", counted in
`skipped_db_missing`) and left out of the denominator.

Deliberate differences from the evaluator: the prediction is cut at its first `;` (with --keep_distinct
the evaluator fails `Q; SELECT 1`, which sqlite3 refuses as two statements; by default its DISTINCT
removal happens to keep only the first statement); it does not replace the text `value` with `1`
in predictions (the evaluator's `p_str.replace("value", "1")`, meant for value-less predictions,
rewrites string literals and names too); a query may run 30 s (the evaluator's 60 s asyncio limit
cannot interrupt a query, which runs synchronously); only `<db_id>.sqlite` is used, not every database in its folder
(the official Spider download has one per folder; the test-suite databases have more); queries are
read-only.

Queries run on the host, not in the sandbox (see evalkit.sqlite_readonly): SQL cannot leave SQLite
without extensions, and the connection is read-only, refuses extensions, ATTACH, PRAGMA and every
write through an authorizer, and is stopped by a progress handler at the timeout. This keeps the
databases (binary files) out of the sandbox's text-only programs and costs milliseconds a query.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import sqlparse

from evalkit.data import HubSplit, file_provenance, load_rows, sha256_file
from evalkit.requests import GenerationRequest, SamplingParams
from evalkit.sqlite_readonly import QueryError, run_query
from evalkit.tasks import Scored, Task, TaskError, TaskOption, register
from tasks import _instruct

STOP = (";", "\n\n", "\n--")
TIMEOUT = 30.0
DOWNLOAD_HELP = ("Download Spider from https://yale-lily.github.io/spider (spider.zip holds database/ and "
                 "tables.json) and pass its folder with --spider-db-dir.")


def create_table_schema(schema: dict) -> str:
    """CREATE TABLE statements for one tables.json entry: columns with types, primary and foreign keys."""
    columns = schema["column_names_original"]
    types = schema["column_types"]
    tables = []
    for t, table in enumerate(schema["table_names_original"]):
        lines = [f"  {name} {types[c]}" for c, (owner, name) in enumerate(columns) if owner == t]
        keys = [columns[c][1] for c in schema["primary_keys"] if isinstance(c, int) and columns[c][0] == t]
        if keys:
            lines.append(f"  PRIMARY KEY ({', '.join(keys)})")
        for src, dst in schema["foreign_keys"]:
            if columns[src][0] == t:
                ref_table = schema["table_names_original"][columns[dst][0]]
                lines.append(f"  FOREIGN KEY ({columns[src][1]}) REFERENCES {ref_table}({columns[dst][1]})")
        tables.append(f"CREATE TABLE {table} (\n" + ",\n".join(lines) + "\n);")
    return "\n\n".join(tables)


_CURRENT_YEAR_RE = re.compile(r"YEAR\s*\(\s*CURDATE\s*\(\s*\)\s*\)\s*", re.IGNORECASE)


def remove_distinct(sql: str) -> str:
    """The query without its DISTINCT keywords (every token that is the word, as test-suite-sql-eval does)."""
    statements = sqlparse.parse(sql)
    if not statements:
        return sql
    return "".join(token.value for token in statements[0].flatten() if token.value.lower() != "distinct")


def evaluator_form(sql: str, keep_distinct: bool) -> str:
    """The query as test-suite-sql-eval executes it: `> =` -> `>=` (and `<`, `!`), DISTINCT removed unless
    kept, YEAR(CURDATE()) -> 2020."""
    sql = sql.replace("> =", ">=").replace("< =", "<=").replace("! =", "!=")
    if not keep_distinct:
        sql = remove_distinct(sql)
    return _CURRENT_YEAR_RE.sub("2020", sql)


def results_match(gold: list[tuple], predicted: list[tuple], order_matters: bool) -> bool:
    """Equal as multisets of rows (as lists when order matters), under some reordering of the columns."""
    if not gold or not predicted:
        return not gold and not predicted
    width = len(gold[0])
    if len(gold) != len(predicted) or len(predicted[0]) != width:
        return False
    gold_columns = [Counter(row[i] for row in gold) for i in range(width)]
    predicted_columns = [Counter(row[j] for row in predicted) for j in range(width)]
    # Only a predicted column with the same values can stand for a gold column.
    candidates = [[j for j in range(width) if predicted_columns[j] == gold_columns[i]] for i in range(width)]
    gold_rows = gold if order_matters else Counter(gold)
    for perm in itertools.islice(itertools.product(*candidates), 100_000):
        if len(set(perm)) != width:
            continue
        rows = [tuple(row[j] for j in perm) for row in predicted]
        if (rows if order_matters else Counter(rows)) == gold_rows:
            return True
    return False


@register("spider")
class Spider(Task):
    name = "spider"
    uses_sandbox = False
    supports_chat = True
    options = {"keep_distinct": TaskOption(False, "keep DISTINCT in both queries (test-suite-sql-eval's "
                                                  "--keep_distinct); by default both lose it, as officially")}

    def database_root(self) -> Path:
        """The folder holding <db_id>/<db_id>.sqlite (accepts the download's top folder or its database/)."""
        root = self.data.spider_db_dir
        if root is None:
            if self.data.mirror is None:
                raise TaskError(f"spider needs its SQLite databases. {DOWNLOAD_HELP}")
            root = self.data.mirror / "spider" / "database"
        root = Path(root).expanduser()
        if (root / "database").is_dir():
            root = root / "database"
        if not root.is_dir():
            raise TaskError(f"the Spider database folder {root} does not exist. {DOWNLOAD_HELP}")
        return root

    def docs(self) -> list[dict]:
        root = self.database_root()
        tables_file = next((p for p in (root.parent / "tables.json", root / "tables.json") if p.is_file()), None)
        if tables_file is None:
            raise TaskError(f"tables.json (the schemas) is missing beside {root}. {DOWNLOAD_HELP}")
        schemas = {s["db_id"]: s for s in json.loads(tables_file.read_text(encoding="utf-8"))}
        rows, self.provenance = load_rows(self.data, self.name, local="spider/dev.json",
                                          hub=[HubSplit("xlangai/spider", "validation")],
                                          fields={"db_id": str, "question": str, "query": str})
        self.provenance["files"] = self.provenance.get("files", {}) | file_provenance(tables_file)["files"]
        docs = []
        for i, row in enumerate(rows):
            if row["db_id"] not in schemas:
                raise TaskError(f"spider row {i}: database {row['db_id']!r} has no schema in {tables_file}")
            path = root / row["db_id"] / f"{row['db_id']}.sqlite"
            docs.append({"task_id": f"spider/{i}", "db_id": row["db_id"], "question": row["question"],
                         "query": row["query"], "db_path": str(path), "schema": schemas[row["db_id"]]})
        self.provenance["databases"] = {
            db: (sha256_file(p) if (p := root / db / f"{db}.sqlite").is_file() else "missing")
            for db in sorted({d["db_id"] for d in docs})
        }
        return docs

    def request(self, doc: dict) -> GenerationRequest:
        if self.chat:  # the same schema and instruction; the whole query comes back in a ```sql block
            question = (f"{_instruct.fenced(create_table_schema(doc['schema']), 'sql')}\n\n"
                        "Using valid SQLite, answer the following question for the tables provided above.\n"
                        f"{doc['question']}\nAnswer with the SQL query in a ```sql code block.")
            return _instruct.chat_request(doc["task_id"], _instruct.turns((), question), _instruct.fence_prefix("sql"),
                                          _instruct.STOP, 256, doc["query"].strip() + _instruct.CLOSING_FENCE)
        prompt = (f"{create_table_schema(doc['schema'])}\n\n"
                  "-- Using valid SQLite, answer the following question for the tables provided above.\n"
                  f"-- {doc['question']}\nSELECT")
        gold = re.sub(r"^\s*select\b", "", doc["query"].strip().rstrip(";"), flags=re.I)
        return GenerationRequest(doc["task_id"], prompt, STOP, 256, reference=gold)

    def score(self, doc: dict, completion: str, sandbox) -> Scored:
        body = (_instruct.code_of("sql", completion) if self.chat else completion).split(";")[0]
        # The completion continues the prompt's SELECT; a replayed full query that restates it is taken whole,
        # and so is a chat answer (WITH ... SELECT included).
        predicted = body.strip() if self.chat or re.match(r"\s*select\b", body, re.I) else "SELECT" + body
        path = Path(doc["db_path"])
        if not path.is_file():
            return Scored("skipped", program=predicted, error=f"database missing: {path}")
        keep_distinct = bool(self.option("keep_distinct"))
        gold_sql = evaluator_form(doc["query"], keep_distinct)
        predicted_sql = evaluator_form(predicted, keep_distinct)
        try:
            gold = run_query(path, gold_sql, TIMEOUT)
        except QueryError as e:
            return Scored("error", program=predicted_sql, error=f"the gold query failed: {e}")
        try:
            rows = run_query(path, predicted_sql, TIMEOUT, max_rows=len(gold) + 1)
        except QueryError as e:
            return Scored("timeout" if e.timed_out else "failed", program=predicted_sql, error=str(e))
        if results_match(gold, rows, order_matters="order by" in gold_sql.lower()):
            return Scored("passed", program=predicted_sql)
        return Scored("failed", program=predicted_sql,
                      error=f"result differs from gold ({len(rows)} vs {len(gold)} rows)")

    def aggregate(self, records: Sequence[dict], sampling: SamplingParams) -> dict:
        scored = [r for r in records if r["verdict"] != "skipped"]
        out = super().aggregate(scored, sampling)
        for part in ("metrics", "stderr", "stderr_method"):
            out[part] = {"execution_accuracy" if k == "pass@1" else k: v for k, v in out[part].items()}
        skipped = {r["task_id"] for r in records if r["verdict"] == "skipped"}
        out["skipped_db_missing"] = len(skipped)
        out["scored_questions"] = len({r["task_id"] for r in scored})
        return out

    def settings(self) -> dict:
        chat = {
            "prompt": "chat: the CREATE TABLE schema in a ```sql block, 'Using valid SQLite, answer the following "
                      "question for the tables provided above.', the question, 'Answer with the SQL query in a "
                      "```sql code block.' as one user turn",
            "response_prefix": _instruct.fence_prefix("sql"),
            "stop": list(_instruct.STOP),
            "extraction": "the first fenced block of response prefix + completion, up to its first ';', whole",
        } if self.chat else {}
        return {
            "prompt": "CREATE TABLE schema from tables.json + '-- Using valid SQLite, answer ...' + question; "
                      "completion continues 'SELECT'",
            "stop": list(STOP),
            "checker": "test-suite-sql-eval execution match: multiset of rows (list if the gold contains "
                       "'order by'), any column order; read-only SQLite on the host, errors and timeouts are wrong",
            "normalisation": "'> =' -> '>=' (and '<', '!'), YEAR(CURDATE()) -> 2020, DISTINCT "
                             + ("kept (keep_distinct)" if self.option("keep_distinct") else
                                "removed from both queries (the official default)"),
            "reference": "test-suite-sql-eval exec_eval.eval_exec_match on the official Spider databases",
            "deliberate_differences": [
                "the prediction is cut at its first ';' (with keep_distinct the evaluator fails 'Q; SELECT 1')",
                "'value' is not replaced by '1' in predictions (the evaluator rewrites literals and names)",
                "30 s per query (the evaluator's 60 s asyncio limit cannot interrupt a running query)",
                "only <db_id>.sqlite, not every database in its folder",
                "queries are read-only",
            ],
            "timeout_s": TIMEOUT,
            "sqlite_version": sqlite3.sqlite_version,
            "skipped": "questions whose database file is missing: verdict 'skipped', outside the denominator",
        } | chat
