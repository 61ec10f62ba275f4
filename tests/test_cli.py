"""The command line explains itself and lists every benchmark the issues name."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from evalkit.cli import app, parse_per_task
from evalkit.tasks import broken_task_modules, task_names

EXPECTED_TASKS = {
    "humaneval", "mbpp", "mbpp-sanitized", "cruxeval-o", "cruxeval-i", "spider",
    "multipl-e-cpp", "multipl-e-java", "multipl-e-js", "multipl-e-sh",
    "humaneval-x-cpp", "humaneval-x-java", "humaneval-x-js", "humaneval-x-go", "humaneval-x-rust",
    "math", "math500", "gsm8k", "mmlu", "aime24",
}


def test_every_task_is_registered_and_every_adapter_imports():
    assert broken_task_modules() == {}
    assert EXPECTED_TASKS <= set(task_names())


def test_tasks_command_lists_them_with_a_description_and_their_options():
    res = CliRunner().invoke(app, ["tasks"])
    assert res.exit_code == 0
    lines = res.output.splitlines()
    listed = {line.split()[0]: i for i, line in enumerate(lines) if line and not line.startswith(" ")}
    assert EXPECTED_TASKS <= set(listed)
    assert all(len(lines[i].split()) > 2 for i in listed.values())  # each has a description
    assert "--prompt minerva*|boxed" in lines[listed["math500"] + 1]
    assert "--prompt 3-shot*|zero-shot" in lines[listed["mbpp"] + 1]
    assert "--task-option timeout=10.0" in lines[listed["humaneval"] + 1]


def _command(path: list[str]):
    import typer.main

    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


@pytest.mark.parametrize("command", [[], ["run"], ["tasks"], ["sandbox"], ["sandbox", "build"], ["sandbox", "check"],
                                     ["report"], ["compare"], ["gate"], ["bench"], ["score"], ["merge"]])
def test_help_explains_each_command_and_every_visible_option(command):
    res = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output
    for param in _command(command).params:
        if getattr(param, "hidden", False) or not param.opts or param.name == "help":
            continue
        assert param.opts[0] in res.output, f"{param.opts[0]} missing from `{' '.join(command)} --help`"
        assert param.help, f"{param.opts[0]} of `{' '.join(command)}` has no help text"


def test_per_task_prompt_option():
    assert parse_per_task(None) is None
    assert parse_per_task("boxed") == "boxed"
    assert parse_per_task("math=minerva, aime24=boxed") == {"math": "minerva", "aime24": "boxed"}
    res = CliRunner().invoke(app, ["run", "--model", "reference", "--tasks", "math500", "--prompt", "gsm8k=boxed"])
    assert res.exit_code == 2 and "not selected with --tasks: gsm8k" in res.output
