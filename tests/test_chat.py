"""Chat formats: mistral-common's instruct encoding token for token, and checkpoints' chat templates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

from evalkit.chat import hf_chat_format, mistral_chat_format
from evalkit.errors import BackendError, ChatFormatError
from evalkit.requests import ChatMessage

SYSTEM = "You are a careful Python programmer."
SHOTS = (ChatMessage("user", "Write add(a, b)."),
         ChatMessage("assistant", "```python\ndef add(a, b):\n    return a + b\n```"))
QUESTION = ChatMessage("user", "Write mul(a, b).\n\n```python\ndef mul(a, b):\n    \"\"\"a times b\"\"\"\n```")
PREFIX = "```python\n"

MISTRAL_KINDS = {"system": SystemMessage, "user": UserMessage, "assistant": AssistantMessage}


def mistral_common_ids(tokenizer: MistralTokenizer, messages, prefix: str) -> list[int]:
    """The ids mistral-common itself gives for the conversation (the golden output)."""
    turns = [MISTRAL_KINDS[m.role](content=m.content) for m in messages]
    if prefix:
        turns.append(AssistantMessage(content=prefix, prefix=True))
    return mistral_common_tokens(tokenizer, turns)


def mistral_common_tokens(tokenizer: MistralTokenizer, turns) -> list[int]:
    return tokenizer.encode_chat_completion(ChatCompletionRequest(messages=turns)).tokens


CONVERSATIONS = {
    "one turn": (QUESTION,),
    "system": (ChatMessage("system", SYSTEM), QUESTION),
    "few-shot": (*SHOTS, QUESTION),
    "system and few-shot": (ChatMessage("system", SYSTEM), *SHOTS, QUESTION),
}


@pytest.mark.parametrize("version", ["v1", "v3"])
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_mistral_rendering_equals_encode_chat_completion(version, conversation, prefix):
    messages = CONVERSATIONS[conversation]
    rendered = mistral_chat_format(version).render(messages, prefix)
    golden = mistral_common_ids(getattr(MistralTokenizer, version)(), messages, prefix)
    assert list(rendered.ids) == golden
    assert rendered.ids[0] == 1 and rendered.ids.count(1) == 1  # one BOS


def test_mistral_v3_literal_ids():
    """Pinned ids (mistral-common 1.13 with the v3 model it ships): a change in the renderer shows up here."""
    fmt = mistral_chat_format("v3")
    assert list(fmt.render([ChatMessage("user", "Write add(a, b).")]).ids) == [
        1, 3, 12786, 1735, 29500, 29476, 29493, 1055, 1377, 4]
    assert list(fmt.render([ChatMessage("user", "Q1")], PREFIX).ids) == [1, 3, 1954, 29508, 4, 9557, 18435, 781]


def test_mistral_v3_merges_the_system_prompt_into_the_last_user_turn():
    fmt = mistral_chat_format("v3")
    rendered = fmt.render((ChatMessage("system", "SYS"), ChatMessage("user", "U1"), ChatMessage("assistant", "A1"),
                           ChatMessage("user", "U2")), PREFIX)
    assert rendered.text == "<s>[INST] U1[/INST] A1</s>[INST] SYS\n\nU2[/INST] ```python\n"
    assert "last user turn" in fmt.describe()["system_prompt"]
    assert "first user turn" in mistral_chat_format("v1").describe()["system_prompt"]


def test_readable_text_shows_the_prompt_with_its_spaces():
    """The recorded text spells control tokens and keeps the space SentencePiece puts before each turn."""
    fmt = mistral_chat_format("v3")
    rendered = fmt.render(CONVERSATIONS["system and few-shot"], PREFIX)
    assert "[INST]" in rendered.text and "def mul(a, b):\n    \"\"\"a times b\"\"\"" in rendered.text
    assert rendered.text.endswith("[/INST] ```python\n")
    assert rendered.record()["prompt_tokens"] == len(rendered.ids)


def test_mistral_format_from_a_loaded_tokenizer_and_its_description():
    fmt = mistral_chat_format(MistralTokenizer.v3())
    assert fmt.describe() == mistral_chat_format("v3").describe()
    assert fmt.describe()["template_sha256"] != mistral_chat_format("v1").describe()["template_sha256"]


@pytest.mark.parametrize("roles", [("assistant", "user"), ("user", "user"), ("user", "assistant"),
                                   ("system",), ("user", "system"), ()])
def test_conversations_no_format_defines_are_errors(roles):
    messages = [ChatMessage(role, f"m{i}") for i, role in enumerate(roles)]
    with pytest.raises(ChatFormatError):
        mistral_chat_format("v3").render(messages)


def test_unknown_mistral_version():
    with pytest.raises(BackendError, match="unknown Mistral tokenizer version"):
        mistral_chat_format("v9")


# --- Hugging Face chat templates -------------------------------------------------------------------------------

CHATML = ("{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
TRIMMING = ("{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}<|end|>{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")
NO_SYSTEM = ("{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}"
             "{{ raise_exception('System role not supported') }}{% endif %}[{{ m.role }}]{{ m.content }}{% endfor %}"
             "{% if add_generation_prompt %}[assistant]{% endif %}")
DROPS_SYSTEM = ("{{ bos_token }}{% for m in messages if m.role != 'system' %}[{{ m.role }}]{{ m.content }}"
                "{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}")


def byte_tokenizer(template: str | None):
    """A byte-level tokenizer (one token per byte, no merges) with BOS/EOS and the given chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(ByteLevel.alphabet())
    vocab = {"<s>": 0, "</s>": 1} | {ch: i + 2 for i, ch in enumerate(alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>")
    tok.chat_template = template
    return tok


def test_hf_template_renders_text_and_encodes_it_without_a_second_bos():
    tok = byte_tokenizer(CHATML)
    fmt = hf_chat_format(tok, "tiny")
    rendered = fmt.render(CONVERSATIONS["system and few-shot"], PREFIX)
    expected = tok.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in CONVERSATIONS["system and few-shot"]]
        + [{"role": "assistant", "content": PREFIX}], tokenize=False, continue_final_message=True)
    assert rendered.text == expected and expected.endswith("<|assistant|>\n```python\n")
    assert rendered.ids[0] == tok.bos_token_id and rendered.ids.count(tok.bos_token_id) == 1
    assert tok.decode(rendered.ids) == rendered.text
    plain = fmt.render([QUESTION])
    assert plain.text.endswith("<|end|>\n<|assistant|>\n")


def test_hf_template_that_trims_the_prefix_gets_its_newline_back():
    fmt = hf_chat_format(byte_tokenizer(TRIMMING), "trims")
    assert fmt.render([QUESTION], PREFIX).text.endswith("<|assistant|>```python\n")


def test_hf_template_that_refuses_a_system_prompt_is_an_error_not_a_drop():
    fmt = hf_chat_format(byte_tokenizer(NO_SYSTEM), "no-system")
    assert fmt.render([QUESTION]).text.startswith("<s>[user]")
    with pytest.raises(ChatFormatError, match="System role not supported"):
        fmt.render([ChatMessage("system", SYSTEM), QUESTION])
    assert fmt.describe()["system_prompt"].startswith("not supported")


def test_hf_template_that_silently_drops_a_system_prompt_is_an_error():
    fmt = hf_chat_format(byte_tokenizer(DROPS_SYSTEM), "drops")
    with pytest.raises(ChatFormatError, match="drops the system message"):
        fmt.render([ChatMessage("system", SYSTEM), QUESTION])


def test_hf_checkpoint_without_a_template_is_a_clear_error():
    with pytest.raises(BackendError, match="has no chat template"):
        hf_chat_format(byte_tokenizer(None), "bare")


def test_hf_describe_hashes_the_template():
    a, b = hf_chat_format(byte_tokenizer(CHATML)), hf_chat_format(byte_tokenizer(TRIMMING))
    assert a.describe()["template_sha256"] != b.describe()["template_sha256"]
    assert a.describe()["system_prompt"].startswith("as the template renders it")


def test_hf_mistral_common_tokenizer_renders_with_mistral_common(tmp_path: Path):
    """A checkpoint folder whose tokenizer is mistral-common's (MistralCommonBackend) has no template by design:
    it renders exactly as mistral-common does."""
    import mistral_common
    from transformers import AutoTokenizer

    shipped = Path(mistral_common.__file__).parent / "data" / "mistral_instruct_tokenizer_240323.model.v3"
    shutil.copy(shipped, tmp_path / "tokenizer.model.v3")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MistralCommonBackend"}))
    fmt = hf_chat_format(AutoTokenizer.from_pretrained(tmp_path))
    messages = CONVERSATIONS["system and few-shot"]
    assert list(fmt.render(messages, PREFIX).ids) == mistral_common_ids(MistralTokenizer.v3(), messages, PREFIX)
