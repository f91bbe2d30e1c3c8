"""What the commands share: options built from dataclass fields, Ray start-up, output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import typing
from collections.abc import Sequence

from audiogan.config import ConfigError


def field_help(cls: type, name: str) -> str:
    """The comment above a dataclass field, as one line: the field's help, written once."""
    from simple_parsing.docstring import get_attribute_docstring

    text = get_attribute_docstring(cls, name).help_string
    return " ".join(text.split())


def field_default(cls: type, name: str):
    return {field.name: field.default for field in dataclasses.fields(cls)}[name]


def option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    name: str,
    *flags: str,
    unset: bool = False,
    **kwargs,
) -> None:
    """An option whose type, default and help come from the field `name` of the dataclass
    `cls`: `--name-with-dashes` unless `flags` are given; a bool field is a switch.

    With `unset`, the option's value is None (False for a switch) when it is not given, so
    that the dataclass alone fills it in (`only_given`); --help still shows the field's
    default."""
    hints = typing.get_type_hints(cls)
    default = field_default(cls, name)
    flags = flags or (f"--{name.replace('_', '-')}",)
    help_text = kwargs.pop("help", None) or field_help(cls, name)
    if hints[name] is bool:
        kwargs.setdefault("action", "store_true")
        action = parser.add_argument(
            *flags, dest=kwargs.pop("dest", name), help=help_text, **kwargs
        )
    else:
        if hints[name] in (int, float, str):
            kwargs.setdefault("type", hints[name])
        action = parser.add_argument(
            *flags,
            dest=kwargs.pop("dest", name),
            default=None if unset else default,
            help=f"{help_text} (default: {shown_default(default)})",
            **kwargs,
        )
    action.field = (cls, name)  # where its default and help come from (tests/test_layout.py)


def shown_default(default) -> str:
    return "all" if default is None else str(default)


def values(args: argparse.Namespace, cls: type) -> dict:
    """The fields of `cls` that `args` holds, as given or defaulted."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}


def only_given(args: argparse.Namespace, cls: type) -> dict:
    """The fields of `cls` whose `unset` options were given (None or False: not given)."""
    return {k: v for k, v in values(args, cls).items() if v is not None and v is not False}


def in_flags(error: ConfigError, flags: dict[str, str]) -> ConfigError:
    """The error with the config keys the user gave as options named as those options."""
    message = str(error)
    for key, flag in flags.items():
        message = re.sub(rf"\b{key}\b", flag, message)
    return ConfigError(message)


def start_ray(args: argparse.Namespace, dashboard: bool = False) -> None:
    """Joins --address's (or RAY_ADDRESS's) cluster, or starts a local Ray instance of its own.

    Commands that run Ray Train ask for the dashboard: it serves Ray's state API, which Ray
    Train's placement-group cleaner polls to see that a trainer has gone. Without it the cleaner
    logs a warning every few seconds of a run, and the workers of a Tune trial ASHA stopped keep
    their CPUs, so later trials wait forever."""
    from audiogan.connect import start_ray as connect

    connect(args.address, args.num_cpus, dashboard=dashboard)


def check_dataset(data_url: str) -> dict:
    """A missing or unfinished --data fails here, in a second, not after Ray has started."""
    from audiogan.dataset import read_manifest

    return read_manifest(data_url)


def check_checkpoint(url: str) -> None:
    """A CHECKPOINT that is not one (or cannot be read) fails here, before Ray starts."""
    from audiogan import runfolder

    runfolder.locate(url, log=stderr)


def stderr(message: str) -> None:
    """Progress goes to stderr, so that stdout holds only the result (and --json's line)."""
    print(message, file=sys.stderr, flush=True)


def emit(summary: dict, as_json: bool, lines: Sequence[str]) -> None:
    for line in lines:
        print(line)
    if as_json:
        print(json.dumps(summary, sort_keys=True))


def add_output_options(
    parser: argparse.ArgumentParser, local_ray: bool, json_line: bool = True
) -> None:
    """--json for every command that ends with figures; --address and --num-cpus for those
    that run on Ray."""
    if local_ray:
        parser.add_argument(
            "--address",
            metavar="ADDR",
            help="the Ray cluster to run on: HOST:PORT of its head (GCS), ray://HOST:PORT, or "
            "auto (the one `ray start` last recorded on this machine). Default: RAY_ADDRESS; "
            "with neither, a new local Ray instance of this command's own, never another's",
        )
        parser.add_argument(
            "--num-cpus",
            type=int,
            metavar="N",
            help="CPUs of a local Ray instance (default: all; ignored on a cluster)",
        )
    if json_line:
        parser.add_argument(
            "--json",
            action="store_true",
            help="print the figures as one JSON object on the last line",
        )


def add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also print Ray Train's own lines (a 'Reporting training result' line per worker "
        "and report, the worker group's start and end) and Ray Data's progress bars where the "
        "output is not a terminal; without it: one line per logged step",
    )


def add_overrides(parser: argparse.ArgumentParser, help_text: str = "config overrides") -> None:
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=help_text)
