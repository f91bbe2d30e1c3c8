"""`python -m jobs.bench_prepare SOURCE [options]`: the same as `audiogan bench prepare`."""

import sys

from audiogan.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "prepare", *sys.argv[1:]]))
