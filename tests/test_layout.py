"""The layout a newcomer relies on: no long functions, and every command in a module of its own
that holds its options."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 80


def _functions(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_function_outside_the_tests_is_over_80_lines():
    long = [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for folder in ("audiogan", "jobs")
        for path in sorted((ROOT / folder).rglob("*.py"))
        for name, line, length in _functions(path)
        if length > MAX_FUNCTION_LINES
    ]
    assert not long, "split these:\n" + "\n".join(long)


def _actions(parser, path="audiogan"):
    """(command path, action) for every option of every subcommand."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        else:
            yield path, action


def test_help_defaults_come_from_the_dataclass_fields_and_nowhere_else():
    import re

    from audiogan.commands import build_parser
    from audiogan.commands.common import field_default, field_help, shown_default

    from_fields = 0
    for command, action in _actions(build_parser()):
        text = action.help or ""
        where = f"{command} {'/'.join(action.option_strings) or action.dest}"
        if hasattr(action, "field"):
            cls, name = action.field
            from_fields += 1
            assert text.startswith(field_help(cls, name)), where
            if action.nargs != 0:  # a switch has no default to show
                assert text.endswith(f"(default: {shown_default(field_default(cls, name))})")
                if action.default is not None:
                    assert action.default == field_default(cls, name), where
        else:  # a help written by hand states no number as a default
            assert not re.search(r"default[^)]*\d", text), f"{where}: {text}"
    assert from_fields >= 40


def test_each_command_is_one_module_holding_its_parser_and_its_run():
    import argparse

    from audiogan.commands import COMMANDS, build_parser

    (top,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert [m.__name__.rsplit(".", 1)[-1] for m in COMMANDS] == list(top.choices)
    for name, parser in top.choices.items():
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        leaves = nested[0].choices.values() if nested else [parser]
        for leaf in leaves:
            assert leaf.get_default("run").__module__ == f"audiogan.commands.{name}"
