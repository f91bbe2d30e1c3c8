"""The `audiogan` command: each subcommand lives in audiogan/commands/, with its options."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from audiogan.commands import build_parser
from audiogan.errors import AudioganError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except AudioganError as error:
        print(f"audiogan {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
