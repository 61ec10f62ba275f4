"""Chat formats: how a conversation becomes the token ids an instruct model was trained to read.

A task in chat mode asks for `messages` (an optional system prompt first, then user and assistant turns
alternating, ending with a user turn) and a `response_prefix` put in the model's mouth. A ChatFormat
renders that to ids the backend feeds as they are (BOS included), plus a readable text for the records.

Two formats, each the renderer the model's makers publish, never a hand-written template:

- `mistral_chat_format`: mistral-common's own `encode_chat_completion` (v3 for Codestral Mamba, Mathstral and
  Mistral 7B v0.3; v1 for Mistral 7B v0.1). The response prefix is a final `AssistantMessage(prefix=True)`;
  the system prompt is merged where the tokenizer version puts it (v3: into the last user turn).
- `hf_chat_format`: a checkpoint's chat template through `apply_chat_template`, rendered to text and encoded
  without special tokens (the template writes BOS itself), as transformers does when it tokenizes.

A conversation a format cannot express (a system prompt the template refuses or drops, a prefix the template
rewrites) is a ChatFormatError, never a silent drop.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from evalkit.errors import ChatFormatError
from evalkit.requests import ChatMessage

if TYPE_CHECKING:
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer as MistralCommonTokenizer

# A conversation with every kind of turn; its rendering fingerprints a format that has no template text.
PROBE: tuple[ChatMessage, ...] = (
    ChatMessage("system", "SYSTEM"),
    ChatMessage("user", "USER 1"),
    ChatMessage("assistant", "ASSISTANT 1"),
    ChatMessage("user", "USER 2"),
)
PROBE_PREFIX = "PREFIX\n"


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered conversation: the ids to feed the model (BOS included) and the same prompt as readable text."""

    ids: tuple[int, ...]
    text: str

    def record(self) -> dict:
        """What a backend records per sample (Completion.info) about the prompt it fed."""
        return {"prompt_tokens": len(self.ids), "rendered_prompt": self.text,
                "prompt_ids_sha256": sha256_ids(self.ids)}


class ChatFormat(ABC):
    """Renders conversations for one model; `describe()` is recorded with the run."""

    name: str

    @abstractmethod
    def render(self, messages: Sequence[ChatMessage], response_prefix: str = "") -> RenderedPrompt:
        """The prompt for `messages`, with the assistant's answer begun by `response_prefix`."""

    @abstractmethod
    def describe(self) -> dict:
        """The format's name, the sha256 of its template (or of a probe rendering) and how a system prompt goes in."""


def sha256_ids(ids: Sequence[int]) -> str:
    return hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()


def check_conversation(messages: Sequence[ChatMessage]) -> None:
    """An optional leading system prompt, then user/assistant turns alternating from a user turn to a user turn."""
    turns = list(messages[1:] if messages and messages[0].role == "system" else messages)
    roles = [m.role for m in messages]
    if not turns:
        raise ChatFormatError(f"a chat prompt needs at least one user turn (got roles {roles})")
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(turns))]
    if [m.role for m in turns] != expected or turns[-1].role != "user":
        raise ChatFormatError(f"a chat prompt is an optional system prompt, then user and assistant turns "
                              f"alternating, ending with a user turn; got roles {roles}")


class MistralChatFormat(ChatFormat):
    """mistral-common's instruct encoding (`encode_chat_completion`)."""

    def __init__(self, tokenizer: MistralCommonTokenizer, label: str) -> None:
        self.tokenizer = tokenizer
        self.label = label
        self.name = f"mistral-common {label}"

    def render(self, messages: Sequence[ChatMessage], response_prefix: str = "") -> RenderedPrompt:
        from mistral_common.exceptions import MistralCommonException
        from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
        from mistral_common.protocol.instruct.request import ChatCompletionRequest

        check_conversation(messages)
        kinds = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}
        turns = [kinds[m.role](content=m.content) for m in messages]
        if response_prefix:
            turns.append(AssistantMessage(content=response_prefix, prefix=True))
        try:
            tokenized = self.tokenizer.encode_chat_completion(ChatCompletionRequest(messages=turns))
        except (MistralCommonException, ValueError, AssertionError) as e:
            raise ChatFormatError(f"{self.name} cannot render this conversation: {e}") from e
        ids = tuple(tokenized.tokens)
        return RenderedPrompt(ids, self.readable(ids))

    def readable(self, ids: Sequence[int]) -> str:
        """The ids as text: control tokens spelled out, and the space SentencePiece attaches to a word kept.

        mistral-common's own `text` shows SentencePiece pieces ("[INST]▁Write<0x0A>"); decoding each run of
        ordinary tokens alone would drop the space a run starts with ("[/INST] A1" would read "[/INST]A1").
        """
        inner = self.tokenizer.instruct_tokenizer.tokenizer
        parts: list[str] = []
        run: list[int] = []

        def flush() -> None:
            if run:
                text = inner.decode(run)
                if inner.id_to_piece(run[0]).startswith("\u2581") and not text.startswith(" "):
                    text = " " + text
                parts.append(text)
                run.clear()

        for token in ids:
            if inner.is_special(token):
                flush()
                parts.append(inner.id_to_piece(token))
            else:
                run.append(token)
        flush()
        return "".join(parts)

    def system_prompt_rule(self) -> str:
        from mistral_common.tokens.tokenizers.instruct import (
            InstructTokenizerV1,
            InstructTokenizerV2,
            InstructTokenizerV7,
        )

        instruct = self.tokenizer.instruct_tokenizer
        if isinstance(instruct, InstructTokenizerV7):
            return "its own [SYSTEM_PROMPT] turn"
        if isinstance(instruct, InstructTokenizerV2):
            return "merged into the last user turn as system + '\\n\\n' + content"
        if isinstance(instruct, InstructTokenizerV1):
            return "merged into the first user turn as system + '\\n\\n' + content"
        return f"as {type(instruct).__name__} encodes it"

    def describe(self) -> dict:
        from mistral_common import __version__

        probe = self.render(PROBE, PROBE_PREFIX)
        return {
            "format": self.name,
            "renderer": f"mistral-common {__version__} encode_chat_completion",
            "tokenizer": self.label,
            # mistral-common has no template text; the hash is of a probe conversation's rendered ids.
            "template_sha256": sha256_ids(probe.ids),
            "system_prompt": self.system_prompt_rule(),
            "response_prefix": "a final AssistantMessage(prefix=True)",
        }


def mistral_chat_format(tokenizer: str | MistralCommonTokenizer) -> MistralChatFormat:
    """The instruct format of a Mistral tokenizer: a version ("v1", "v3", shipped inside mistral-common) or a
    mistral-common MistralTokenizer already loaded (from a tokenizer file)."""
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer as MistralCommonTokenizer

    if isinstance(tokenizer, MistralCommonTokenizer):
        return MistralChatFormat(tokenizer, tokenizer.instruct_tokenizer.tokenizer.version.value)
    loaders = {"v1": MistralCommonTokenizer.v1, "v2": MistralCommonTokenizer.v2, "v3": MistralCommonTokenizer.v3}
    if tokenizer not in loaders:
        raise ChatFormatError(f"unknown Mistral tokenizer version {tokenizer!r} (have {', '.join(loaders)})")
    return MistralChatFormat(loaders[tokenizer](), tokenizer)


class HFChatFormat(ChatFormat):
    """A checkpoint's Jinja chat template, through the tokenizer's `apply_chat_template`."""

    def __init__(self, tokenizer, source: str, template: str) -> None:
        self.tokenizer = tokenizer
        self.source = source
        self.template = template
        self.name = "hf chat template"

    def render(self, messages: Sequence[ChatMessage], response_prefix: str = "") -> RenderedPrompt:
        check_conversation(messages)
        conversation = [{"role": m.role, "content": m.content} for m in messages]
        if response_prefix:
            conversation.append({"role": "assistant", "content": response_prefix})
        try:
            text = self.tokenizer.apply_chat_template(conversation, tokenize=False,
                                                      add_generation_prompt=not response_prefix,
                                                      continue_final_message=bool(response_prefix))
        except Exception as e:  # jinja's TemplateError (raise_exception in a template) and ValueError
            roles = [m["role"] for m in conversation]
            raise ChatFormatError(f"the chat template of {self.source} cannot render roles {roles}: "
                                  f"{type(e).__name__}: {e}") from e
        if not isinstance(text, str):
            raise ChatFormatError(f"apply_chat_template(tokenize=False) returned {type(text).__name__}, not text")
        for m in messages:
            if m.content.strip() and m.content.strip() not in text:
                raise ChatFormatError(f"the chat template of {self.source} drops the {m.role} message "
                                      f"{m.content.strip()[:40]!r}")
        if response_prefix and not text.endswith(response_prefix):
            # continue_final_message cuts the template's trimmed rendering: put the prefix's trailing
            # whitespace (the newline after "```python") back, so the model continues exactly the prefix.
            kept = response_prefix.rstrip()
            if not text.endswith(kept):
                raise ChatFormatError(f"the chat template of {self.source} changes the response prefix "
                                      f"{response_prefix!r}; the prompt ends {text[-40:]!r}")
            text += response_prefix[len(kept):]
        # The template writes BOS and every control token itself; encoding must add nothing (a second BOS).
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise ChatFormatError(f"the tokenizer of {self.source} did not encode the prompt to a list of ids")
        bos = self.tokenizer.bos_token_id
        if bos is not None and ids[:2] == [bos, bos]:
            raise ChatFormatError(f"the chat template of {self.source} writes BOS twice")
        return RenderedPrompt(tuple(ids), text)

    def describe(self) -> dict:
        try:
            self.render(PROBE[:1] + PROBE[3:])
            system = "as the template renders it (checked to appear in the prompt)"
        except ChatFormatError as e:
            system = f"not supported: {e}"
        return {
            "format": self.name,
            "renderer": "transformers apply_chat_template",
            "source": self.source,
            "template_sha256": hashlib.sha256(self.template.encode()).hexdigest(),
            "system_prompt": system,
            "response_prefix": "a final assistant message, continue_final_message=True",
        }


def hf_chat_format(tokenizer, source: str | None = None) -> ChatFormat:
    """The chat format of a transformers tokenizer: its chat template, or mistral-common's encoding when the
    tokenizer is mistral-common's own (MistralCommonBackend), which has no template by design."""
    from transformers.tokenization_mistral_common import MistralCommonBackend

    source = source or tokenizer.name_or_path or "the tokenizer"
    if isinstance(tokenizer, MistralCommonBackend):
        return mistral_chat_format(tokenizer.tokenizer)
    try:
        template = tokenizer.get_chat_template()
    except ValueError:
        template = None
    if not isinstance(template, str) or not template.strip():
        raise ChatFormatError(f"{source} has no chat template (chat_template in tokenizer_config.json or "
                              "chat_template.jinja), so --chat cannot prompt it as an instruct model; "
                              "run without --chat, or pass --tokenizer with a tokenizer that has one")
    return HFChatFormat(tokenizer, source, template)
