"""`ray job submit -- python -m jobs.evaluate ...`: `audiogan evaluate` with the same options."""

import sys

from audiogan.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
