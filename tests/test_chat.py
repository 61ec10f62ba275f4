"""Chat formats: mistral-common's instruct encoding token for token, and checkpoints' chat templates."""

from __future__ import annotations

import json
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
    from transformers import AutoTokenizer

    from evalkit.backends.mistral_tokenizers import write_autotokenizer_files

    write_autotokenizer_files(tmp_path)
    fmt = hf_chat_format(AutoTokenizer.from_pretrained(tmp_path))
    messages = CONVERSATIONS["system and few-shot"]
    assert list(fmt.render(messages, PREFIX).ids) == mistral_common_ids(MistralTokenizer.v3(), messages, PREFIX)


# --- the native backend renders chat requests with mistral-common ---------------------------------------------

def test_native_backend_feeds_the_mistral_common_rendering(tmp_path):
    """Greedy chat generation on a tiny Mamba-2 equals generating from mistral-common's own ids; the completion is
    the text after the response prefix, and the rendered prompt is recorded per sample."""
    import torch
    from mamba2_checkpoints import oracle, save_hf

    from evalkit.backends.native import NativeBackend
    from evalkit.models.generate import generate
    from evalkit.requests import GenerationRequest, SamplingParams

    backend = NativeBackend.from_spec(str(save_hf(oracle(seed=5), tmp_path / "ckpt")), dtype="float32",
                                      device="cpu", batch_size=2)
    messages = CONVERSATIONS["system and few-shot"]
    request = GenerationRequest("t", "readable only", max_tokens=12, messages=messages, response_prefix=PREFIX)
    [[completion]] = backend.generate([request], SamplingParams())
    golden = mistral_common_ids(MistralTokenizer.v3(), messages, PREFIX)
    tok = backend.tokenizer
    out = generate(backend.model, torch.tensor(golden), 12, eos_id=tok.eos_id)[len(golden):].tolist()
    out = out[: out.index(tok.eos_id)] if tok.eos_id in out else out
    assert completion.text == tok.decode_continuation(golden, out)
    assert completion.info["prompt_tokens"] == len(golden)
    assert completion.info["rendered_prompt"].endswith("[/INST] ```python\n")
    assert completion.info["rendered_prompt"].startswith("<s>[INST] Write add(a, b).[/INST] ```python")
    assert backend.describe()["chat_format"]["format"] == "mistral-common v3"


# --- the tasks' instruct variants --------------------------------------------------------------------------------

GENERATION_TASKS = ("humaneval", "mbpp", "mbpp-sanitized", "gsm8k", "math", "math500", "aime24", "cruxeval-o",
                    "cruxeval-i", "spider", "humaneval-x-cpp", "humaneval-x-java", "humaneval-x-js", "humaneval-x-go",
                    "humaneval-x-rust")
MULTIPL_E = ("multipl-e-cpp", "multipl-e-java", "multipl-e-js", "multipl-e-sh")


def chat_task(name: str, data_dir: Path, **kwargs):
    from evalkit.data import DataConfig
    from evalkit.tasks import get_task

    return get_task(name, DataConfig(mirror=data_dir), chat=True, **kwargs)


def test_every_generation_task_has_a_chat_variant():
    from evalkit.tasks import task_class, task_names

    generation = {n for n in task_names() if task_class(n).kind == "generate"}
    assert generation == set(GENERATION_TASKS) | set(MULTIPL_E)
    assert all(task_class(n).supports_chat for n in generation)


@pytest.mark.parametrize("name", GENERATION_TASKS + MULTIPL_E)
def test_chat_requests_are_conversations_recorded_in_the_settings(name, data_dir):
    task = chat_task(name, data_dir)
    request = task.request(task.docs()[0])
    assert request.chat and request.messages[-1].role == "user"
    assert request.prompt.startswith("<|user|>\n") and request.prompt.endswith(request.response_prefix)
    settings = task.settings()
    assert settings["prompt"].startswith("chat: ") and task.chosen()["chat"] is True
    if request.response_prefix:
        assert request.response_prefix.startswith("```") and settings["response_prefix"] == request.response_prefix
        assert request.stop == ("\n```",) and settings["stop"] == ["\n```"]
    from evalkit.data import DataConfig
    from evalkit.tasks import get_task

    plain = get_task(name, DataConfig(mirror=data_dir))  # the base variant asks for a completion
    assert not plain.request(plain.docs()[0]).chat and plain.settings() != settings


def test_code_prompt_shows_the_task_in_a_fence_and_opens_the_answer(data_dir):
    task = chat_task("humaneval", data_dir)
    doc = task.docs()[0]
    request = task.request(doc)
    [user] = request.messages
    assert user.content.endswith(f"```python\n{doc['prompt'].strip(chr(10))}\n```")
    assert "single ```python code block" in user.content
    assert request.response_prefix == "```python\n"
    assert request.reference == (doc["prompt"] + doc["canonical_solution"]).strip("\n") + "\n```"


def test_few_shot_exemplars_become_turns(data_dir):
    mbpp = chat_task("mbpp", data_dir)
    roles = [m.role for m in mbpp.request(mbpp.docs()[0]).messages]
    assert roles == ["user", "assistant"] * 3 + ["user"]
    assert "[BEGIN]" not in mbpp.request(mbpp.docs()[0]).messages[-1].content
    zero = chat_task("mbpp", data_dir, prompt="zero-shot")
    assert len(zero.request(zero.docs()[0]).messages) == 1
    gsm8k = chat_task("gsm8k", data_dir)
    messages = gsm8k.request(gsm8k.docs()[0]).messages
    assert len(messages) == 17 and messages[1].content.endswith("The answer is 6.")
    crux = chat_task("cruxeval-o", data_dir)
    messages = crux.request(crux.docs()[0]).messages
    assert len(messages) == 5 and "[ANSWER]" not in messages[0].content
    assert messages[1].content == "```python\nassert f(17) == 17\n```"


def test_math_chat_defaults_to_the_boxed_instruction(data_dir):
    task = chat_task("math500", data_dir)
    assert task.prompt_variant == "boxed"
    [user] = task.request(task.docs()[0]).messages
    assert user.content.endswith("\nPlease reason step by step, and put your final answer within \\boxed{}.")
    minerva = chat_task("math500", data_dir, prompt="minerva")
    assert len(minerva.request(minerva.docs()[0]).messages) == 9


def test_first_fenced_block():
    from tasks._instruct import first_fenced_block

    assert first_fenced_block("Sure:\n```python\nx = 1\n```\nMore\n```\ny\n```") == "x = 1\n"
    assert first_fenced_block("```\nunclosed\ncode") == "unclosed\ncode"
    assert first_fenced_block("no fence") is None


@pytest.mark.parametrize(("lang", "code", "name", "defined"), [
    ("python", "import math\n\ndef f(x):\n    return x", "f", True),
    ("python", "print(f(3))", "f", False),
    ("cpp", "#include<vector>\nlong f(std::vector<long> xs) {\n  return 0;\n}", "f", True),
    ("cpp", "int main() { return f(1); }", "f", False),
    ("java", "class Problem {\n    public static long f(long n) throws Exception {\n    }\n}", "f", True),
    ("js", "const f = (a, b) => {\n  return a;\n}", "f", True),
    ("js", "function f(a) {}", "f", True),
    ("js", "console.log(f(1))", "f", False),
    ("go", "func F(xs []int) int {\n    return 0\n}", "F", True),
    ("rust", "fn f(xs: Vec<i32>) -> i32 {\n    0\n}", "f", True),
    ("sh", "f() {\n    echo $1\n}", "f", True),
    ("sh", "echo $(f 1)", "f", False),
])
def test_the_function_the_tests_call_is_checked_for(lang, code, name, defined):
    from tasks._instruct import defines

    assert defines(code, lang, name) is defined


def test_an_answer_without_the_tested_function_fails_saying_so(data_dir):
    task = chat_task("humaneval", data_dir)
    doc = task.docs()[0]
    scored = task.score(doc, "def helper():\n    return 1\n```", sandbox=None)  # judged before any execution
    assert scored.verdict == "failed" and doc["entry_point"] in scored.error and "does not define" in scored.error
    java = chat_task("humaneval-x-java", data_dir)
    scored = java.score(java.docs()[0], "class Solution {\n}\n```", sandbox=None)
    assert scored.verdict == "failed" and "hasCloseElements" in scored.error


def test_chat_programs_put_the_answer_between_preamble_and_tests(data_dir):
    go = chat_task("humaneval-x-go", data_dir)
    doc = go.docs()[0]
    answer = ('package main\n\nimport (\n    "math"\n    "fmt"\n)\n\n// takes a list of strings.\n'
              + go.prompt(doc).split("\n)\n", 1)[1] + doc["canonical_solution"]
              + "\nfunc main() {\n    fmt.Println(1)\n}\n")
    program = go.reference_program(doc, answer + "```")
    assert program.count("package main") == 1 and "func main" not in program
    # Only what the kept code uses: not fmt (main is gone), not strings (named in a comment), not rand ("operand.").
    assert '"math"' in program and '"fmt"' not in program and '"strings"' not in program
    assert '"math/rand"' not in go.reference_program(doc, answer.replace("numbers[i]", "operand.x[i]") + "```")
    cpp = chat_task("multipl-e-cpp", data_dir)
    doc = next(d for d in cpp.docs() if d["task_id"] == "HumanEval_53_add")
    program = cpp.reference_program(doc, "long add(long x, long y) {\n    return x + y;\n}\nint main() { }\n```")
    assert program.count("int main") == 1 and program.startswith("#include<assert.h>\n#include<bits/stdc++.h>\n")


@pytest.mark.docker
def test_reference_in_chat_mode_scores_one_on_every_task(tmp_path, sandbox):
    """`--model reference --chat`: references written as an instruct model answers, read back by the chat
    extractors (MultiPL-E has no canonical solutions: see the hand-written answers below)."""
    from typer.testing import CliRunner

    from evalkit.cli import app

    result = CliRunner().invoke(app, ["run", "--model", "reference", "--chat", "--tasks", ",".join(GENERATION_TASKS),
                                      "--limit", "3", "--output-path", str(tmp_path), "--no-progress"])
    assert result.exit_code == 0, result.output
    results = json.loads(next(tmp_path.iterdir()).joinpath("results.json").read_text())
    for name in GENERATION_TASKS:
        info = results["tasks"][name]
        assert info["n"] == 3 and all(v == 1.0 for v in info["metrics"].values()), (name, info)
        assert results["config"]["tasks"][name]["options"]["chat"] is True


# Whole answers, as an instruct model writes them, built from test_multipl_e's hand-written bodies.
CLOSERS = {"cpp": "\n}\n", "java": "\n    }\n}\n", "js": "", "sh": "\n}\n"}


@pytest.mark.docker
@pytest.mark.parametrize("lang", ["cpp", "java", "js", "sh"])
def test_multipl_e_chat_answers_pass_and_mutations_fail(lang, data_dir, sandbox):
    from test_multipl_e import SOLUTIONS

    task = chat_task(f"multipl-e-{lang}", data_dir)
    docs = {d["task_id"]: d for d in task.docs()}
    names = [n for n in SOLUTIONS if lang in SOLUTIONS[n]][:4]
    for name in names:
        correct, mutated = SOLUTIONS[name][lang]
        doc = docs[name]
        verdicts = [task.score(doc, f"{doc['prompt']}{body}{CLOSERS[lang]}", sandbox).verdict
                    for body in (correct, mutated)]
        shown = task.reference_program(doc, doc["prompt"] + correct + CLOSERS[lang])
        assert verdicts == ["passed", "failed"], (name, shown)


def test_gate_refuses_to_compare_a_chat_run_with_a_base_run(tmp_path):
    from typer.testing import CliRunner

    from evalkit.cli import app

    runs = {}
    for mode in ("--no-chat", "--chat"):
        out = tmp_path / mode.strip("-")
        result = CliRunner().invoke(app, ["run", "--model", "reference", mode, "--tasks", "gsm8k", "--limit", "4",
                                          "--output-path", str(out), "--no-progress"])
        assert result.exit_code == 0, result.output
        runs[mode] = next(out.iterdir())
    same = CliRunner().invoke(app, ["gate", str(runs["--chat"]), str(runs["--chat"])])
    assert same.exit_code == 0, same.output
    refused = CliRunner().invoke(app, ["gate", str(runs["--no-chat"]), str(runs["--chat"])])
    assert refused.exit_code == 2 and "options.chat" in refused.output, refused.output


SYSTEM = "You are a careful mathematician."


def test_a_system_prompt_goes_first_in_every_chat_prompt_and_is_part_of_the_experiment(tmp_path):
    from typer.testing import CliRunner

    from evalkit.cli import app

    def run(name: str, *extra: str):
        out = tmp_path / name
        result = CliRunner().invoke(app, ["run", "--model", "reference", "--chat", "--tasks", "gsm8k,math500",
                                          "--limit", "3", "--output-path", str(out), "--no-progress", *extra])
        return result, out

    result, out = run("system", "--system-prompt", SYSTEM)
    assert result.exit_code == 0, result.output
    run_dir = next(out.iterdir())
    results = json.loads((run_dir / "results.json").read_text())
    for name in ("gsm8k", "math500"):
        assert all(v == 1.0 for v in results["tasks"][name]["metrics"].values()), results["tasks"][name]
        assert results["config"]["tasks"][name]["system_prompt"] == SYSTEM
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and all(s["prompt"].startswith(f"<|system|>\n{SYSTEM}\n<|user|>\n") for s in samples)
    assert json.loads((run_dir / "run.json").read_text())["run_options"]["system_prompt"] == SYSTEM

    plain, plain_out = run("plain")
    assert plain.exit_code == 0, plain.output
    refused = CliRunner().invoke(app, ["gate", str(next(plain_out.iterdir())), str(run_dir)])
    assert refused.exit_code == 2 and "system_prompt" in refused.output, refused.output
    other = CliRunner().invoke(app, ["run", "--resume", str(run_dir), "--system-prompt", "Be brief.",
                                     "--no-progress"])
    assert other.exit_code == 2 and "system_prompt" in other.output, other.output


@pytest.mark.parametrize(("args", "says"), [
    (["--system-prompt", SYSTEM], "add --chat"),
    (["--chat", "--system-prompt", " "], "--system-prompt is empty"),
])
def test_a_system_prompt_needs_chat_prompts_and_text(tmp_path, args, says):
    from typer.testing import CliRunner

    from evalkit.cli import app

    result = CliRunner().invoke(app, ["run", "--model", "reference", "--tasks", "gsm8k", "--limit", "1",
                                      "--output-path", str(tmp_path), "--no-progress", *args])
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output, result.output


def test_a_system_prompt_reaches_the_rendered_mistral_prompt(data_dir):
    from evalkit.runner import RunOptions, task_request

    task = chat_task("gsm8k", data_dir)
    doc = task.docs()[0]
    request = task_request(task, doc, RunOptions(model="reference", tasks=["gsm8k"], chat=True, system_prompt=SYSTEM))
    assert request.messages[0] == ChatMessage("system", SYSTEM) and request.messages[1:] == task.request(doc).messages
    rendered = mistral_chat_format("v3").render(request.messages, request.response_prefix)
    assert SYSTEM in rendered.text and SYSTEM not in mistral_chat_format("v3").render(
        task.request(doc).messages, request.response_prefix).text


def test_readme_shows_the_exact_prompt(data_dir):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    shown = readme.split("The exact prompt of HumanEval/23")[1].split("````text\n")[1].split("````")[0]
    task = chat_task("humaneval", data_dir)
    request = task.request(next(d for d in task.docs() if d["task_id"] == "HumanEval/23"))
    rendered = mistral_chat_format("v3").render(request.messages, request.response_prefix)
    assert shown == rendered.text
    assert f"{len(rendered.ids)} tokens in all" in readme


def test_the_chat_format_is_part_of_the_models_identity():
    """Two models with their own chat formats, evaluated the same way, are the same experiment for a report; a
    resume with another chat format is not."""
    from evalkit.experiment import differing_settings, same_experiment

    def config(fmt: str) -> dict:
        return {"backend": {"name": "native", "dtype": "bfloat16", "chat_format": {"format": fmt}},
                "tasks": {"humaneval": {"options": {"chat": True}}}}

    assert differing_settings([config("mistral-common v1"), config("mistral-common v3")]) == {}
    assert same_experiment(config("mistral-common v1"), config("mistral-common v3")) == ["backend.chat_format.format"]
