"""Instruct (chat) variants of the generation tasks: the conversation, the response prefix, and reading answers back.

In chat mode (`--chat`) a task asks for `messages` and a `response_prefix` instead of a completion prompt;
the backend renders them with the model's chat format (evalkit.chat). Few-shot exemplars become
user/assistant turns. The completion a backend returns is the text after the response prefix, so every
extractor here reads `response_prefix + completion`.

- Code tasks: the task's code prompt in a fenced block, an instruction to answer with the whole function
  in one fenced block, and a response prefix that opens that block ("```python\\n"); generation stops at
  the closing fence. The code is the first fenced block of prefix + completion, and the function the
  tests call must be defined in it (else the sample fails, saying so).
- Math (MATH, MATH-500, AIME): the problem and "Please reason step by step, and put your final answer
  within \\boxed{}."; GSM8K: the eight exemplars as turns; answers are extracted as in base mode.
- CRUXEval and Spider: the task's instruction, with the answer in a fenced block opened by the prefix.

The reference answers in chat mode are written the way an instruct model answers (fenced code, boxed
answers), so `--model reference --chat` exercises these extractors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from evalkit.errors import TaskError
from evalkit.requests import ChatMessage, GenerationRequest, readable_conversation

# Markdown info strings and language names, by evalkit language key.
FENCE_TAGS = {"python": "python", "cpp": "cpp", "java": "java", "js": "javascript", "go": "go", "rust": "rust",
              "sh": "bash", "sql": "sql"}
LANGUAGE_NAMES = {"python": "Python", "cpp": "C++", "java": "Java", "js": "JavaScript", "go": "Go", "rust": "Rust",
                  "sh": "Bash", "sql": "SQL"}
CLOSING_FENCE = "\n```"
STOP = (CLOSING_FENCE,)

CODE_INSTRUCTION = ("Complete the following {language} code. Answer with all of it, its last function completed, "
                    "in a single ```{tag} code block.")

# How each language declares the function its tests call; `{name}` is the escaped name.
_DEFINITION = {
    "python": r"^[ \t]*(?:async[ \t]+)?def[ \t]+{name}[ \t]*\(|^[ \t]*class[ \t]+{name}\b|^{name}[ \t]*=",
    "cpp": r"\b{name}\s*\([^;{{}}()]*\)\s*(?:const\s*)?(?:noexcept\s*)?\{{",
    "java": r"\b{name}\s*\([^;{{}}()]*\)\s*(?:throws\s[^;{{]*)?\{{",
    "js": r"\bfunction\s*\*?\s*{name}\s*\(|\b{name}\s*=\s*(?:async\s*)?(?:function\b|\([^)]*\)\s*=>|\w+\s*=>)",
    "go": r"\bfunc\s+{name}\s*(?:\[[^\]]*\])?\s*\(",
    "rust": r"\bfn\s+{name}\s*(?:<[^>]*>)?\s*\(",
    "sh": r"^[ \t]*(?:function[ \t]+{name}\b|{name}[ \t]*\([ \t]*\))",
}
_OPENING_FENCE = re.compile(r"^[ \t]*```[^\n`]*$", re.M)


def fence_prefix(lang: str) -> str:
    """The response prefix of a task answered in `lang`: the opening of a fenced block."""
    return f"```{FENCE_TAGS[lang]}\n"


def chat_request(task_id: str, messages: Sequence[ChatMessage], response_prefix: str, stop: Sequence[str],
                 max_tokens: int, reference: str | None) -> GenerationRequest:
    return GenerationRequest(task_id, readable_conversation(tuple(messages), response_prefix), tuple(stop),
                             max_tokens, reference, messages=tuple(messages), response_prefix=response_prefix)


def turns(shots: Iterable[tuple[str, str]], question: str) -> tuple[ChatMessage, ...]:
    """Exemplars as user/assistant turns, then the question as the last user turn (a system prompt is the
    run's, `--system-prompt`, put first by the runner)."""
    out: list[ChatMessage] = []
    for user, assistant in shots:
        out += [ChatMessage("user", user), ChatMessage("assistant", assistant)]
    return (*out, ChatMessage("user", question))


def fenced(code: str, lang: str) -> str:
    """`code` in a fenced block, as the prompt shows it and as an instruct model answers."""
    return f"```{FENCE_TAGS[lang]}\n{code.strip(chr(10))}\n```"


def first_fenced_block(text: str) -> str | None:
    """The contents of the first fenced block (an unclosed one runs to the end of the text), or None."""
    start = _OPENING_FENCE.search(text)
    if start is None:
        return None
    body = text[start.end() + 1:]
    end = re.search(r"^[ \t]*```", body, re.M)
    return body[: end.start()] if end else body


def answer_block(response_prefix: str, completion: str) -> str:
    """The fenced answer of a completion that follows `response_prefix`; the whole text when it has no fence."""
    text = response_prefix + completion
    block = first_fenced_block(text)
    return text if block is None else block


def code_request(task_id: str, lang: str, code_prompt: str, max_tokens: int,
                 reference_code: str | None) -> GenerationRequest:
    """The instruct request of a function-completion task: complete `code_prompt`, answer in a fenced block."""
    instruction = CODE_INSTRUCTION.format(language=LANGUAGE_NAMES[lang], tag=FENCE_TAGS[lang])
    question = f"{instruction}\n\n{fenced(code_prompt, lang)}"
    reference = None if reference_code is None else reference_code.strip("\n") + CLOSING_FENCE
    return chat_request(task_id, turns((), question), fence_prefix(lang), STOP, max_tokens, reference)


def code_of(lang: str, completion: str) -> str:
    """The code of a chat completion that follows the fence prefix of `lang`."""
    return answer_block(fence_prefix(lang), completion)


def undefined(lang: str, code: str, names: Iterable[str]) -> str | None:
    """Why `code` cannot be tested (it does not define one of `names`, which the tests call), or None."""
    missing = [n for n in names if not defines(code, lang, n)]
    if missing:
        return f"the answer's code block does not define {', '.join(missing)}, which the tests call"
    return None


def defines(code: str, lang: str, name: str) -> bool:
    """Whether `code` declares the function `name` (a definition, not just a call)."""
    return re.search(_DEFINITION[lang].format(name=re.escape(name)), code, re.M) is not None


_KEYWORDS = frozenset({"if", "for", "while", "switch", "catch", "return", "sizeof", "else", "do", "function"})


def last_defined(code_prompt: str, lang: str) -> str:
    """The name of the last function `code_prompt` declares: the one it asks to complete."""
    pattern = re.compile(_DEFINITION[lang].replace("{name}", r"([A-Za-z_$][\w$]*)").replace("{{", "{")
                         .replace("}}", "}"), re.M)
    names = [next(g for g in m.groups() if g) for m in pattern.finditer(code_prompt)]
    names = [n for n in names if n not in _KEYWORDS]
    if not names:
        raise TaskError(f"no {LANGUAGE_NAMES[lang]} function declaration in the prompt:\n{code_prompt[-300:]}")
    return names[-1]


def cut_at_line(code: str, pattern: str) -> str:
    """`code` up to the first line matching `pattern` (a model's own `main`, say), or all of it."""
    match = re.search(pattern, code, re.M)
    return code[: match.start()] if match else code


def code_settings(lang: str, checker: str) -> dict:
    """The recorded prompt policy of a code task's instruct variant."""
    return {
        "prompt": "chat: " + CODE_INSTRUCTION.format(language=LANGUAGE_NAMES[lang], tag=FENCE_TAGS[lang])
                  + " Then the task's code prompt in a fenced block; one user turn, no system prompt",
        "response_prefix": fence_prefix(lang),
        "stop": list(STOP),
        "sanitizer": "first fenced block of response prefix + completion; the function the tests call must be "
                     "defined in it",
        "checker": checker,
    }
