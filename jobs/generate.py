"""`python -m jobs.generate CHECKPOINT OUT_DIR [--n N]`: the same as `audiogan generate`."""

import sys

from audiogan.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
