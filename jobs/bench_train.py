"""`python -m jobs.bench_train [--model M | --config P]`: the same as `audiogan bench train`."""

import sys

from audiogan.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "train", *sys.argv[1:]]))
