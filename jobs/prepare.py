"""`ray job submit -- python -m jobs.prepare SOURCE DEST [...]`: the same as `audiogan prepare`."""

import sys

from audiogan.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
