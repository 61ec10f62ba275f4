"""Where benchmark data comes from: a local mirror directory, or the Hugging Face hub through `datasets`.

Every loader returns rows plus provenance (source, revision or sha256), which the run records.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from evalkit.tasks import TaskError

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
    """Yield (line number, row) from a .jsonl or .jsonl.gz file; a malformed line raises TaskError."""
    opener = gzip.open if path.suffix == ".gz" else open
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
