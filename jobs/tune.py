"""`ray job submit -- python -m jobs.tune --data D --storage S --name N`: `audiogan tune`."""

import sys

from audiogan.cli import main

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
