"""`ray job submit -- python -m jobs.serve CHECKPOINT --host 0.0.0.0 --replicas N`: `audiogan
serve` as a job, which answers until the job is stopped (`ray job stop`)."""

import sys

from audiogan.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
