"""Where benchmark data comes from: a local mirror directory, or the Hugging Face hub through `datasets`.

Every loader returns rows plus provenance (source, revision or sha256), which the run records.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import TaskError

DATA_DIR_ENV = "EVALKIT_DATA_DIR"


@dataclass(frozen=True)
class DataConfig:
    """`mirror`: a local directory laid out like the shared mirror (humaneval/, mbpp/, ...), or None to
    use the hub (or a copy a package bundles). `revision` pins hub datasets. `spider_db_dir` holds the
    Spider databases."""

    mirror: Path | None = None
    hub: bool = False  # load from the Hugging Face hub even where a bundled copy exists
    revision: str | None = None
    spider_db_dir: Path | None = None

    @classmethod
    def from_options(cls, data_dir: str | None = None, **kw) -> DataConfig:
        chosen = data_dir or os.environ.get(DATA_DIR_ENV)
        mirror = Path(chosen).expanduser().resolve() if chosen else None
        if mirror is not None and not mirror.is_dir():
            raise TaskError(f"data directory {mirror} does not exist (set by --data-dir or ${DATA_DIR_ENV})")
        return cls(mirror=mirror, **kw)

    def local(self, relpath: str) -> Path | None:
        """The mirror's copy of `relpath`, or None when no mirror is configured."""
        if self.mirror is None:
            return None
        path = self.mirror / relpath
        if not path.exists():
            raise TaskError(
                f"{path} is missing from the data mirror {self.mirror}. Put the file there, or unset "
                f"--data-dir/${DATA_DIR_ENV} to load from the Hugging Face hub."
            )
        return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line number, row) from a .jsonl or .jsonl.gz file; a malformed line or file raises TaskError."""
    opener = gzip.open if path.suffix == ".gz" else open
    lineno = 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TaskError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise TaskError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
                yield lineno, row
    except UnicodeDecodeError as e:
        raise TaskError(f"{path}:{lineno + 1}: not UTF-8 text ({e.reason}); the file is damaged or not this "
                        "benchmark's file. Download it again.") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise TaskError(f"{path}: not a complete gzip file ({e or type(e).__name__}); the download was cut short "
                        "or the file is not gzipped. Download it again.") from None


def read_rows(path: Path) -> list[tuple[str, dict]]:
    """(where, row) for each row of a .jsonl, .jsonl.gz or .json (a list of objects) file."""
    if path.suffix != ".json":
        return [(f"{path}:{lineno}", row) for lineno, row in read_jsonl(path)]
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TaskError(f"{path}: not valid JSON ({e}); download the file again") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise TaskError(f"{path}: expected a JSON list of objects")
    return [(f"{path} row {i}", row) for i, row in enumerate(rows)]


@dataclass(frozen=True)
class HubSplit:
    """One split of a Hugging Face hub dataset."""

    repo: str
    split: str
    config: str | None = None


FieldTypes = dict[str, type | tuple[type, ...]]


def load_rows(data: DataConfig, what: str, *, local: str | None = None, hub: Sequence[HubSplit] = (),
              bundled: Path | None = None, fields: FieldTypes | None = None,
              unique: str | None = None) -> tuple[list[dict], dict]:
    """A benchmark's rows and their provenance: the mirror's `local` file when a mirror is set, else the
    `bundled` copy a package ships (unless --hub), else the `hub` splits, concatenated.

    Every row must have `fields` with those types, and `unique` (a field) must not repeat; an empty dataset,
    a missing field, a null or wrongly typed value or a repeated id is a TaskError naming the file and row,
    never a sample counted against the model.
    """
    path = data.local(local) if local else None
    if path is None and bundled is not None and not (data.hub and hub):
        path = bundled
    if path is not None:
        located = read_rows(path)
        provenance = file_provenance(path)
    elif hub:
        located, parts = [], []
        for part in hub:
            rows, prov = hub_rows(part.repo, part.split, part.config, data.revision)
            located += [(f"{part.repo} ({part.config or 'default'}, {part.split}) row {i}", r)
                        for i, r in enumerate(rows)]
            parts.append(prov)
        provenance = parts[0] if len(parts) == 1 else {"source": "hub", "parts": parts}
    else:
        raise TaskError(f"{what}: no data source (set --data-dir or $EVALKIT_DATA_DIR to a local mirror)")
    if not located:
        raise TaskError(f"{what}: the dataset is empty ({path or hub[0].repo})")
    seen: dict = {}
    for where, row in located:
        check_fields(row, fields or {}, f"{what}: {where}")
        if unique is not None:
            key = row[unique]
            if key in seen:
                raise TaskError(f"{what}: {where}: {unique} {key!r} repeats {seen[key]}")
            seen[key] = where
    return [row for _, row in located], provenance


def check_fields(row: dict, fields: FieldTypes, where: str) -> None:
    """Each field present, not null, and of its type (bool is not accepted as int)."""
    missing = [f for f in fields if f not in row]
    if missing:
        raise TaskError(f"{where}: malformed row, missing field(s) {', '.join(missing)}")
    for name, kind in fields.items():
        value = row[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if value is None or not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise TaskError(f"{where}: field {name!r} should be {names}, got {type(value).__name__} {value!r:.60}")


def file_provenance(*paths: Path) -> dict:
    """sha256 of each file, named by its place in the mirror layout (`humaneval/HumanEval.jsonl.gz`), not by
    an absolute path: the same data in another folder or on another machine records the same."""
    return {"source": "local", "files": {"/".join(p.parts[-2:]): sha256_file(p) for p in paths}}


def hub_rows(repo: str, split: str, config: str | None = None, revision: str | None = None) -> tuple[list[dict], dict]:
    """Rows of a hub dataset through `datasets`, with the resolved revision for the record."""
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a hard dependency
        raise TaskError("the `datasets` package is needed to load from the hub: pip install datasets") from e
    try:
        ds = datasets.load_dataset(repo, config, split=split, revision=revision)
    except Exception as e:
        raise TaskError(
            f"could not load {repo} ({config or 'default'}, {split}) from the Hugging Face hub: {e}. "
            f"Offline? Point --data-dir (or ${DATA_DIR_ENV}) at a local mirror of the benchmark files."
        ) from None
    info = getattr(ds, "info", None)
    fingerprint = getattr(ds, "_fingerprint", None)
    prov = {
        "source": "hub",
        "repo": repo,
        "config": config,
        "split": split,
        "revision": revision or getattr(info, "version", None) and str(info.version),
        "fingerprint": fingerprint,
    }
    return [dict(r) for r in ds], prov


def require_fields(row: dict, fields: tuple[str, ...], where: str) -> None:
    missing = [f for f in fields if f not in row]
    if missing:
        raise TaskError(f"{where}: malformed row, missing field(s) {', '.join(missing)}")
