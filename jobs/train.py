"""`ray job submit -- python -m jobs.train --data D --storage S --name N`: `audiogan train`."""

import sys

from audiogan.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
