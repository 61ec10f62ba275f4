"""Mistral tokenizers named by `--tokenizer`: a version that mistral-common ships, a tokenizer file, or a folder.

The versions are the SentencePiece and Tekken files inside the mistral-common wheel (no download): v1 (Mistral
7B v0.1), v2, v3 (Codestral Mamba, Mathstral, Mistral 7B v0.3), v3-tekken, v7. A file or folder is accepted
when mistral-common itself would take it (`tekken.json`, `*.model.vN`, `*.model`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from evalkit.errors import BackendError
from evalkit.models.tokenizer import MistralTokenizer

SHIPPED = {
    "v1": "tokenizer.model.v1",
    "v2": "mistral_instruct_tokenizer_240216.model.v2",
    "v3": "mistral_instruct_tokenizer_240323.model.v3",
    "v3-tekken": "tekken_240718.json",
    "v7": "mistral_instruct_tokenizer_241114.model.v7",
}


def shipped_file(version: str) -> Path:
    import mistral_common

    return Path(mistral_common.__file__).parent / "data" / SHIPPED[version]


def write_autotokenizer_files(directory: Path, version: str = "v3") -> Path:
    """Put the tokenizer file mistral-common ships for `version` into a checkpoint folder, with the
    tokenizer_config.json that makes transformers' AutoTokenizer load it as MistralCommonBackend: transformers,
    lm-eval's `hf` model and `--model hf:` then tokenize exactly as mistral-common does."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    source = shipped_file(version)
    shutil.copy(source, directory)
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MistralCommonBackend"}))
    return directory


def _valid(files: list[Path]) -> Path | None:
    """The file mistral-common picks among `files` (tekken.json, else the last name in sorted order), or None
    when none is a tokenizer file."""
    from mistral_common.tokens.tokenizers.utils import get_one_valid_tokenizer_file

    try:
        return Path(get_one_valid_tokenizer_file([str(f) for f in files]))
    except ValueError:
        return None


def mistral_tokenizer_file(name: str, folders: bool = True) -> Path | None:
    """The tokenizer file `name` stands for: a shipped version, a tokenizer file, or (with `folders`) the one
    tokenizer file inside a folder; None when it is none of these."""
    if name in SHIPPED:
        return shipped_file(name)
    path = Path(name).expanduser()
    if path.is_file():
        return _valid([path])
    if folders and path.is_dir():
        return _valid(sorted(p for p in path.iterdir() if p.is_file()))
    return None


class MistralTokenizerFile(MistralTokenizer):
    """A mistral-common tokenizer read from a file, with the interface of the native backend's tokenizers.

    `mistral` is the loaded mistral-common MistralTokenizer (its instruct encoding renders chat prompts).
    """

    def __init__(self, path: Path) -> None:  # not the parent's: that one loads a shipped version by name
        from mistral_common.tokens.tokenizers.mistral import MistralTokenizer as MistralCommonTokenizer

        self.path = path
        self.mistral = MistralCommonTokenizer.from_file(str(path))
        self._inner = self.mistral.instruct_tokenizer.tokenizer
        self.version = path.name
        self.vocab_size = self._inner.n_words
        self.bos_id = self._inner.bos_id
        self.eos_id = self._inner.eos_id

    def encode(self, text: str, bos: bool = True) -> list[int]:
        return self._inner.encode(text, bos=bos, eos=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self._inner.decode(list(ids))


def native_tokenizer(name: str) -> MistralTokenizer:
    """The tokenizer `--tokenizer NAME` gives a native model: v1 or v3 as the native backend loads them by
    default, any other shipped version, a tokenizer file, or a folder holding one."""
    if name in ("v1", "v3"):
        return MistralTokenizer(name)
    file = mistral_tokenizer_file(name)
    if file is None:
        raise BackendError(f"--tokenizer {name}: not a Mistral tokenizer (a version: {', '.join(SHIPPED)}; a "
                           "tokenizer file such as tokenizer.model.v3 or tekken.json; or a folder holding one)")
    try:
        return MistralTokenizerFile(file)
    except Exception as e:  # mistral-common raises several types for a file it cannot read
        raise BackendError(f"--tokenizer {name}: cannot read {file}: {type(e).__name__}: {e}") from e
