"""`python -m jobs.bench_model [--config PRESET]`: the same as `audiogan bench model`."""

import sys

from audiogan.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "model", *sys.argv[1:]]))
