"""`ray job submit -- python -m jobs.compare ...`: `audiogan compare` with the same options."""

import sys

from audiogan.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare", *sys.argv[1:]]))
