"""Run an untrusted SELECT against an SQLite file on the host, read-only and bounded in time and rows.

SQL cannot leave SQLite except through extensions, ATTACH (which can create files) and writes; the
connection is opened read-only and immutable, extension loading stays off, and an authorizer admits
only reading statements. A progress handler stops a query at its deadline; the row cap stops a
result that is already known to be wrong from filling memory.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

# What a SELECT needs; everything else (ATTACH, PRAGMA, writes, CREATE TEMP ...) is denied.
ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
FORBIDDEN_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
PROGRESS_STEPS = 10_000  # virtual machine instructions between deadline checks


class QueryError(Exception):
    """The query failed: an SQL error, a denied operation, or (timed_out) its deadline passed."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


def _authorize(action: int, arg1, arg2, db_name, trigger) -> int:
    if action not in ALLOWED:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() in FORBIDDEN_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def connect_readonly(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro&immutable=1", uri=True,
                           check_same_thread=False)
    if hasattr(conn, "enable_load_extension"):
        conn.enable_load_extension(False)
    if hasattr(conn, "setlimit"):  # Python 3.11+: no attached databases at all
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    # Spider's evaluator decodes text leniently: invalid UTF-8 in the data must not fail a query.
    conn.text_factory = lambda b: b.decode("utf-8", errors="ignore")
    conn.set_authorizer(_authorize)
    return conn


def run_query(path: Path, sql: str, timeout: float, max_rows: int | None = None) -> list[tuple]:
    """All rows of `sql` (at most `max_rows`, then stop reading), or QueryError."""
    conn = connect_readonly(path)
    deadline = time.monotonic() + timeout
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_STEPS)
    try:
        cursor = conn.execute(sql)
        rows: list[tuple] = []
        while max_rows is None or len(rows) < max_rows:
            batch = cursor.fetchmany(1000 if max_rows is None else min(1000, max_rows - len(rows)))
            if not batch:
                break
            rows.extend(batch)
        return rows
    except sqlite3.Warning as e:  # e.g. "You can only execute one statement at a time."
        raise QueryError(f"{type(e).__name__}: {e}") from None
    except sqlite3.Error as e:
        if time.monotonic() > deadline:
            raise QueryError(f"timed out after {timeout:g}s", timed_out=True) from None
        raise QueryError(f"{type(e).__name__}: {e}") from None
    finally:
        conn.close()
